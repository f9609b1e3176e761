"""Site-local normalisation (FedBN, Li et al., ICLR 2021): each site keeps its own BatchNorm.

Sites that differ in lighting, surfaces or scanners see inputs whose per-channel statistics differ
far more between sites than within one. With FedAvg, each site trains its convolutions under the
normalisation of its own batches, yet the global model carries one averaged (or pooled) set of
statistics and affine parameters, which matches no site's data: the features a site's convolutions
were trained on are shifted at evaluation. FedBN keeps every normalisation layer (running statistics
and affine parameters) and the model's fitted input statistics at the site: the site trains and
evaluates the shared weights under its own normalisation.

These entries still travel in the update, as every state_dict entry does, so the hub's model stays
complete (pooled statistics, moments.py) for a site that joins without any of its own; a site that
has trained overrides them with its own copy, kept in its state directory per round so `--resume`
replays exactly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from federation.moments import moment_names

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def local_names(model: nn.Module, task: Any = None) -> list[str]:
    """The state_dict entries a site keeps for itself: normalisation layers' and input statistics."""
    names: list[str] = []
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            dot = f"{prefix}." if prefix else ""
            names.extend(f"{dot}{n}" for n, _ in module.named_parameters(recurse=False))
            names.extend(f"{dot}{n}" for n, _ in module.named_buffers(recurse=False))
    for mean, spread, _ in moment_names(model, task):
        names.extend(n for n in (mean, spread) if n not in names)
    return names

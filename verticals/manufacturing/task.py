"""The manufacturing Task: DefectNet on MVTec-layout folders, wired into the common Task protocol."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.task import FitContext, Task
from data_adapters.synth.inspection import site_category, write_dataset
from data_adapters.synth.surfaces import Lighting

from . import evaluate as evaluation
from . import train as training
from .config import PRESETS, RECIPES, InspectConfig
from .data import InspectionData, load_split
from .model import DefectNet


class ManufacturingTask(Task):
    """Visual defect inspection trained on good parts only; image AUROC is the headline."""

    name = "manufacturing"
    config_cls = InspectConfig
    headline_metric = "image_auroc"
    higher_is_better = True
    presets = PRESETS
    recipes = RECIPES

    def build_model(self, cfg: InspectConfig) -> nn.Module:
        return model_from_config(cfg)

    def load_data(self, cfg: InspectConfig, source: str | Path, split: str) -> InspectionData:
        return load_split(cfg, source, split)

    def fit(
        self,
        model: nn.Module,
        data: InspectionData,
        cfg: InspectConfig,
        *,
        epochs: int | None = None,
        context: FitContext | None = None,
    ) -> dict[str, float]:
        return training.fit(model, data, cfg, epochs=epochs, context=context)

    def evaluate(self, model: nn.Module, data: InspectionData, cfg: InspectConfig) -> dict[str, float]:
        return evaluation.evaluate(model, data, cfg)

    def example_input(self, cfg: InspectConfig) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(0)
        return (torch.rand(2, 3, cfg.image_size, cfg.image_size, generator=generator),)

    def calibration_batches(self, data: InspectionData, cfg: InspectConfig) -> list[tuple[torch.Tensor, ...]]:
        """The images `train` calibrates its INT8 model on (deploy.calibration_set: held-out good
        parts and the same parts with synthetic anomalies), so `fedsite compress` quantizes alike."""
        from .deploy import calibration_set

        return [(batch,) for batch in calibration_set(data, cfg)]

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        """One site's line: its own product surface and lighting (site 0: metal, 1: fabric, 2: wood, ...)."""
        return write_dataset(
            Path(out), site_category(site), seed=seed * 1000 + site, scale=scale, lighting=Lighting.for_site(site)
        )

    def federated_moments(self, model: nn.Module) -> list[tuple[str, str, str]]:
        """BatchNorm statistics and the input normalisation DefectNet fits on its first data."""
        return [*super().federated_moments(model), ("mean", "std", "std")]


def model_from_config(cfg: InspectConfig) -> DefectNet:
    """The DefectNet a config describes (model.py takes explicit arguments, not the config)."""
    return DefectNet(
        width=cfg.width,
        reconstruction=cfg.reconstruction,
        attention_kind=cfg.attention,
        model_stride=cfg.model_stride,
        image_size=cfg.image_size,
        score_pool=cfg.score_pool,
        score_pooling=cfg.score_pooling,
        score_line=cfg.score_line,
        memory_size=cfg.memory_size,
        memory_patch=cfg.memory_patch,
        memory_pool=cfg.memory_pool,
        grain=cfg.grain,
        grain_line=cfg.grain_line,
        fine_input=cfg.fine_input,
        grain_input=cfg.grain_input,
    )


TASK = ManufacturingTask()

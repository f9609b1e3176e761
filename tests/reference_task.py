"""A tiny reference Task (1D CNN classifier on synthetic signals) that proves the contract harness.

It is what a vertical looks like at its smallest: frozen config, pure module, fit with
`added_loss`, evaluate with the headline metric first. The real verticals join the same contract
test through the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.compress.reference_cnn import LabelledTensors, fit_binary_classifier
from common.task import Task


@dataclass(frozen=True)
class ReferenceConfig:
    channels: int = 8
    length: int = 32
    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 32
    norm: bool = False  # a BatchNorm after the first conv (the site-local normalisation tests)


class ReferenceNet(nn.Module):
    def __init__(self, channels: int, norm: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2),
            *([nn.BatchNorm1d(channels)] if norm else []),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=-1)).squeeze(-1)


class ReferenceTask(Task):
    name = "reference"
    config_cls = ReferenceConfig
    headline_metric = "auroc"
    higher_is_better = True
    presets = {"tiny": ReferenceConfig(), "small": ReferenceConfig(), "default": ReferenceConfig()}

    def build_model(self, cfg: ReferenceConfig) -> nn.Module:
        return ReferenceNet(cfg.channels, cfg.norm)

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        rng = np.random.default_rng(seed + 1000 * site)
        n = 128 if scale == "tiny" else 512
        y = rng.integers(0, 2, n)
        t = np.linspace(0, 1, 32)
        x = rng.normal(0, 1, (n, 1, 32)) + y[:, None, None] * np.sin(2 * np.pi * 3 * t)[None, None, :] * 1.5
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "data.npz", x=x.astype(np.float32), y=y.astype(np.float32))
        return out

    def load_data(self, cfg: ReferenceConfig, source: str | Path, split: str):
        d = np.load(Path(source) / "data.npz")
        n = len(d["y"])
        cut = int(0.75 * n)
        sl = slice(0, cut) if split == "train" else slice(cut, n)
        return LabelledTensors(torch.from_numpy(d["x"][sl]), torch.from_numpy(d["y"][sl]))

    def fit(self, model, data, cfg, *, epochs=None, context=None):
        x, y = data
        return fit_binary_classifier(
            model,
            x,
            y,
            lr=cfg.lr,
            epochs=epochs or cfg.epochs,
            batch_size=cfg.batch_size,
            context=context,
        )

    def evaluate(self, model, data, cfg):
        from sklearn.metrics import roc_auc_score  # here: a training process never needs sklearn

        x, y = data
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(x)).numpy()
        return {"auroc": float(roc_auc_score(y.numpy(), p)), "accuracy": float(((p > 0.5) == y.numpy()).mean())}

    def example_input(self, cfg):
        return (torch.randn(2, 1, cfg.length),)

    def calibration_batches(self, data, cfg):
        x, _ = data
        return [(x[i : i + 16],) for i in range(0, min(len(x), 64), 16)]


TASK = ReferenceTask()

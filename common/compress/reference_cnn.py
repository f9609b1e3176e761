"""Reference CNN Tasks in 1D, 2D and 3D: the yardsticks compression is measured on.

The verticals' models (a 3D detector, a TCN+GNN, a 2D anomaly model) land in parallel and change;
these three stay fixed, so the compression benchmark and tests have a stable 1D, 2D and 3D conv
network with the shared attention blocks, trained on a task whose metric is not saturated (a faint
localized pattern in noise: AUROC well below 1, so quantization or pruning damage shows).
They implement the full Task protocol, so they exercise exactly the code paths the verticals use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.blocks import attention, conv_nd
from common.task import FitContext, Task, added_loss, fit_optimizer

_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_SIZES = {"tiny": 96, "small": 384, "full": 1024}


def fit_binary_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    context: FitContext | None = None,
    shuffle_seed: int | None = None,
) -> dict[str, float]:
    """Adam on binary cross-entropy plus the Task protocol's added terms (FedProx, distillation).

    The reference CNNs here and the contract-test Task in tests/ share it, so the Task protocol's
    `fit` contract (train in place, honour the FitContext, return the mean loss) is
    written once. `shuffle_seed` None keeps the data order (cheapest, fully deterministic).
    """
    opt = fit_optimizer(context, lambda: torch.optim.Adam(model.parameters(), lr=lr))
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    model.train()
    loss_sum, steps = 0.0, 0
    for _ in range(epochs):
        order = torch.arange(len(y)) if generator is None else torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            out = model(xb)
            loss = nn.functional.binary_cross_entropy_with_logits(out, yb)
            loss = loss + added_loss(model, (xb,), out, context)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss)
            steps += 1
    model.eval()
    return {"loss": loss_sum / max(steps, 1)}


@dataclass(frozen=True)
class LabelledTensors:
    """Inputs and binary labels of the reference Tasks; unpacks as `x, y`; `len()` counts examples."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.x, self.y))


@dataclass(frozen=True)
class ReferenceCNNConfig:
    spatial_dims: int = 2
    size: int = 64
    widths: tuple[int, ...] = (32, 64, 128)
    attention: str = "scse"
    signal: float = 1.6
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 32


class ReferenceCNN(nn.Module):
    """conv-BN-ReLU stages (stride 2 after the first), attention on the last stage, max-pooled linear head.

    Max pooling because the task is presence detection: a mean would dilute a small pattern away.
    """

    def __init__(self, cfg: ReferenceCNNConfig) -> None:
        super().__init__()
        conv, norm = conv_nd(cfg.spatial_dims), _BATCHNORM[cfg.spatial_dims]
        layers: list[nn.Module] = []
        channels = 1
        for i, width in enumerate(cfg.widths):
            stride = 1 if i == 0 else 2
            layers += [conv(channels, width, 3, stride=stride, padding=1, bias=False), norm(width), nn.ReLU()]
            layers += [conv(width, width, 3, padding=1, bias=False), norm(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.attention = attention(cfg.attention, cfg.spatial_dims, channels)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.features(x))
        return self.head(x.flatten(2).amax(dim=-1)).squeeze(-1)


def _pattern(spatial_dims: int) -> np.ndarray:
    """What to detect: a wave burst in 1D, a small ring (2D) or shell (3D): local shapes, not a global shift."""
    if spatial_dims == 1:
        t = np.arange(32)
        return (np.sin(2 * np.pi * t / 8) * np.hanning(32)).astype(np.float32)
    k = 9
    grid = np.stack(np.meshgrid(*[np.arange(k) - k // 2] * spatial_dims, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    return (np.abs(radius - 2.5) < 1.0).astype(np.float32)


class ReferenceCNNTask(Task):
    """Binary detection of a pattern of random strength at a random position in noise (AUROC headline).

    The strength varies so the faintest positives are near the noise floor: AUROC stays below 1 and
    any damage from quantization or pruning moves it.
    """

    config_cls = ReferenceCNNConfig
    headline_metric = "auroc"
    higher_is_better = True

    def __init__(self, spatial_dims: int) -> None:
        self.spatial_dims = spatial_dims
        self.name = f"cnn{spatial_dims}d"
        self.presets = {"tiny": self.tiny_config(), "small": self.default_config(), "default": self.default_config()}

    def default_config(self) -> ReferenceCNNConfig:
        """The benchmark size: compute-heavy enough that latency ratios mean something."""
        size = {1: 512, 2: 64, 3: 32}[self.spatial_dims]
        widths = {1: (32, 64, 128), 2: (32, 64, 128), 3: (16, 32, 64)}[self.spatial_dims]
        return ReferenceCNNConfig(spatial_dims=self.spatial_dims, size=size, widths=widths)

    def tiny_config(self) -> ReferenceCNNConfig:
        size = {1: 64, 2: 16, 3: 12}[self.spatial_dims]
        return ReferenceCNNConfig(spatial_dims=self.spatial_dims, size=size, widths=(8, 16), epochs=2, signal=2.0)

    def build_model(self, cfg: ReferenceCNNConfig) -> nn.Module:
        return ReferenceCNN(cfg)

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        cfg = self.default_config() if scale != "tiny" else self.tiny_config()
        rng = np.random.default_rng(seed + 1000 * site)
        n = _SIZES[scale]
        shape = (cfg.size,) * self.spatial_dims
        x = rng.normal(0.0, 1.0, (n, 1, *shape)).astype(np.float32) + 0.1 * site
        y = rng.integers(0, 2, n)
        pattern = _pattern(self.spatial_dims)
        k = pattern.shape[0]
        for i in np.flatnonzero(y):
            corner = rng.integers(0, cfg.size - k + 1, self.spatial_dims)
            where = (i, 0, *[slice(c, c + k) for c in corner])
            x[where] += cfg.signal * rng.uniform(0.25, 1.25) * pattern  # some positives are too faint to see
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "data.npz", x=x, y=y.astype(np.float32))
        return out

    def load_data(self, cfg: ReferenceCNNConfig, source: str | Path, split: str):
        d = np.load(Path(source) / "data.npz")
        n = len(d["y"])
        a, b = int(0.6 * n), int(0.8 * n)
        part = {"train": slice(0, a), "val": slice(a, b), "test": slice(b, n)}[split]
        return LabelledTensors(torch.from_numpy(d["x"][part]), torch.from_numpy(d["y"][part]))

    def fit(self, model, data, cfg, *, epochs=None, context=None):
        x, y = data
        return fit_binary_classifier(
            model,
            x,
            y,
            lr=cfg.lr,
            epochs=epochs if epochs is not None else cfg.epochs,
            batch_size=cfg.batch_size,
            context=context,
            shuffle_seed=len(y),
        )

    def evaluate(self, model, data, cfg):
        from sklearn.metrics import roc_auc_score  # here: a training process never needs sklearn

        x, y = data
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + 64]) for i in range(0, len(y), 64)])
        p = torch.sigmoid(logits).numpy()
        labels = y.numpy()
        return {"auroc": float(roc_auc_score(labels, p)), "accuracy": float(((p > 0.5) == labels).mean())}

    def example_input(self, cfg):
        return (torch.randn(1, 1, *(cfg.size,) * cfg.spatial_dims),)

    def calibration_batches(self, data, cfg):
        x, _ = data
        return [(x[i : i + 16],) for i in range(0, min(len(x), 64), 16)]


TASKS = {dims: ReferenceCNNTask(dims) for dims in (1, 2, 3)}

"""What a site does with its own data: train from the global model, evaluate, train a local-only model.

Kept apart from Flower's ClientApp (client_app.py) so the work is plain Python over the Task
protocol, and so a test can call it and inspect exactly what would leave the site. Nothing in here
returns samples, labels or record identifiers: only flat weight vectors and scalar metrics.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import config as config_mod
from common.device import seed_everything, set_threads
from common.task import FitContext, FitWindow, KeptOptimizer, Proximal
from federation import codec, privacy, records
from federation.local_norm import local_names
from federation.records import GlobalModel
from federation.settings import FederationSettings


class DrillFailure(RuntimeError):
    """Raised by the fault drill (`--fail-site`) to show that the federation survives a failing site."""


def load_task(settings: FederationSettings) -> Any:
    """The Task for this run: the explicit module if given (tests, plug-ins), else the registry's."""
    if settings.task_module:
        return importlib.import_module(settings.task_module).TASK
    from common.registry import get_task

    return get_task(settings.vertical)


def model_config(task: Any, settings: FederationSettings) -> Any:
    """The resolved model config the hub sent (the Task's tiny config is never assumed)."""
    if settings.config_toml:
        return config_mod.from_toml(task.config_cls, settings.config_toml)
    return task.config_cls()


def site_seed(settings: FederationSettings, site: str, round_: int, salt: int = 0) -> int:
    """A seed per (run seed, site, round): repeatable anywhere, different for every site and round."""
    return (settings.seed * 1_000_003 + zlib.crc32(site.encode()) + round_ * 7919 + salt * 104_729) % (2**31 - 1)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Only finite-or-nan float scalars leave a site (anything else a Task returns is dropped)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            else:
                continue
        out[str(key)] = float(value)
    return out


def describe_site(settings: FederationSettings, data_dir: Path) -> dict[str, Any]:
    """This site's Task.describe_data under the hub's config (what the hub agrees a config from)."""
    if not Path(data_dir).exists():
        raise FileNotFoundError(f"data directory {data_dir} not found")
    task = load_task(settings)
    return task.describe_data(model_config(task, settings), Path(data_dir))


class SiteWorker:
    """One site's worker for one run: holds the Task, its config, the model layout and the data paths."""

    def __init__(self, settings: FederationSettings, site: str, data_dir: str | Path, state_dir: str | Path) -> None:
        self.settings = settings
        self.site = site
        self.data_dir = Path(data_dir)
        self.state_dir = Path(state_dir)
        set_threads(settings.threads or None)
        self.task = load_task(settings)
        self.cfg = model_config(self.task, settings)
        self.model = self.task.build_model(self.cfg)
        self.layout = codec.model_layout(self.model)
        self.local_names = local_names(self.model, self.task)
        self._data: dict[str, Any] = {}
        if not self.data_dir.exists():
            raise FileNotFoundError(f"{site}: data directory {self.data_dir} not found")

    def data(self, split: str) -> Any:
        """The site's `split`, read once per worker (sites reread nothing between rounds)."""
        if split not in self._data:
            self._data[split] = self.task.load_data(self.cfg, self.data_dir, split)
        return self._data[split]

    def round_config(self, round_: int, salt: int = 0) -> Any:
        """The model config for one local training, with a seed of its own when the config has one.

        Tasks that draw patches or crops from a generator seeded by `cfg.seed` would otherwise draw
        the very same batches in every round; a centralized run draws new ones all along its single fit.
        Keys named in `final_round_only` are switched off before the last round (post-hoc stages).
        """
        names = {f.name for f in dataclasses.fields(self.cfg)} if dataclasses.is_dataclass(self.cfg) else set()
        changes: dict[str, Any] = {}
        if "seed" in names:
            changes["seed"] = site_seed(self.settings, self.site, round_, salt=salt)
        if 0 < round_ < self.settings.rounds:  # round 0: the local-only model's single fit, a final one
            changes.update({k: False for k in self.settings.final_round_only if k in names})
        return dataclasses.replace(self.cfg, **changes) if changes else self.cfg

    def _load_global(self, model: GlobalModel, norm_round: int = -1) -> dict[str, torch.Tensor]:
        """Load the hub's model; with `local_norm`, this site's own normalisation of `norm_round` over it."""
        own = self._norm_state(norm_round) if self.settings.local_norm and norm_round > 0 else None
        model.load_into(self.model, self.layout, own)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _own_model(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`arrays` and this site's integer entries, as they go on the wire."""
        return records.pack(arrays, codec.integer_entries(self.model.state_dict()))

    def _epochs(self) -> int | None:
        return self.settings.local_epochs or None

    def train(self, round_: int, model: GlobalModel) -> tuple[dict, dict[str, float]]:
        """Train from the global model; return (wire arrays, scalar metrics)."""
        s = self.settings
        if s.fail_site >= 0 and self.site == f"site-{s.fail_site}":
            if s.fail_mode == "hang":
                time.sleep(max(s.round_timeout * 3, 5.0))
            raise DrillFailure(f"{self.site}: fault drill (--fail-site) in round {round_}")
        start = time.perf_counter()
        anchor = self._load_global(model, norm_round=round_ - 1)
        seed_everything(site_seed(s, self.site, round_))
        data = self.data("train")
        proximal = Proximal(anchor, s.proximal_mu) if s.strategy == "fedprox" and s.proximal_mu > 0 else None
        cfg = self.round_config(round_, salt=3)
        kept = KeptOptimizer(self._optimizer_state(round_ - 1)) if s.keep_optimizer else None
        window = FitWindow(round_ - 1, s.rounds) if s.one_schedule else None
        context = FitContext(proximal=proximal, optimizer=kept, window=window)
        metrics = scalar_metrics(self.task.fit(self.model, data, cfg, epochs=self._epochs(), context=context))
        if kept is not None and kept.last is not None:
            self._save_optimizer_state(round_, kept.last.state_dict()["state"])
        if s.local_norm:
            self._save_norm_state(round_)
        delta = codec.flatten(self.model.state_dict(), self.layout) - model.vector
        delta, norm = privacy.privatize(delta, s.clip, s.noise, site_seed(s, self.site, round_, salt=1))
        arrays, residual = codec.encode_with_feedback(
            delta, s.compression, self._residual(round_ - 1), topk_fraction=s.topk_fraction,
            starts=self.layout.int8_chunks, exact=self.layout.exact,
        )  # fmt: skip
        self._save_residual(round_, residual)
        arrays = self._own_model(arrays)
        metrics.update(
            {
                "num-examples": float(len(data)),
                "update-norm": norm,
                "train-seconds": time.perf_counter() - start,
            }
        )
        return arrays, metrics

    def evaluate(self, model: GlobalModel, split: str, norm_round: int = -1) -> dict[str, float]:
        """The Task's metrics of the given model on this site's `split` (with its own normalisation of
        `norm_round` under `local_norm`; -1 scores the model exactly as sent, e.g. another site's)."""
        self._load_global(model, norm_round=norm_round)
        data = self.data(split)
        metrics = scalar_metrics(self.task.evaluate(self.model, data, self.cfg))
        metrics["num-examples"] = float(len(data))
        return metrics

    def train_local(self, model: GlobalModel) -> tuple[dict, dict[str, float]]:
        """A local-only model (same start, same total epochs as the federation) for the cross-site matrix."""
        self._load_global(model)
        seed_everything(site_seed(self.settings, self.site, 0, salt=2))
        data = self.data("train")
        per_round = self.settings.local_epochs or getattr(self.cfg, "epochs", 1)
        cfg = self.round_config(0, salt=4)
        metrics = scalar_metrics(self.task.fit(self.model, data, cfg, epochs=per_round * self.settings.rounds))
        return self._own_model({"vector": codec.flatten(self.model.state_dict(), self.layout)}), metrics

    def _keep_state(self, kind: str, round_: int, suffix: str, write: Callable[[Path], None]) -> None:
        """Write this round's `kind` state (`write(path)`) atomically into the site's state directory,
        and drop the one of two rounds ago: --resume needs only the last round's."""
        from common.atomic import atomic_path

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_dir / f"{kind}-{round_}{suffix}", suffix=suffix) as tmp:
            write(tmp)
        (self.state_dir / f"{kind}-{round_ - 2}{suffix}").unlink(missing_ok=True)

    def _optimizer_state(self, round_: int) -> dict | None:
        path = self.state_dir / f"optimizer-{round_}.pt"
        return torch.load(path, weights_only=True) if path.exists() else None

    def _save_optimizer_state(self, round_: int, state: dict) -> None:
        """The optimizer's moments after this round, kept at the site (never sent)."""
        self._keep_state("optimizer", round_, ".pt", lambda path: torch.save(state, path))

    def _norm_state(self, round_: int) -> dict[str, torch.Tensor]:
        """This site's normalisation entries as of `round_` (the latest round it trained, at most
        `round_`); empty before its first training: the hub's pooled ones are used then."""
        for r in range(round_, 0, -1):
            path = self.state_dir / f"norm-{r}.pt"
            if path.exists():
                return torch.load(path, weights_only=True)
        return {}

    def _save_norm_state(self, round_: int) -> None:
        """The site's own normalisation after this round's training (FedBN; never replaced by the hub's)."""
        state = self.model.state_dict()
        own = {n: state[n].detach().clone() for n in self.local_names}
        self._keep_state("norm", round_, ".pt", lambda path: torch.save(own, path))

    def _residual(self, round_: int) -> np.ndarray | None:
        path = self.state_dir / f"residual-{round_}.npy"
        return np.load(path) if self.settings.compression != "none" and path.exists() else None

    def _save_residual(self, round_: int, residual: np.ndarray) -> None:
        """Error-feedback residual kept at the site, per round, so --resume replays exactly."""
        if self.settings.compression != "none":
            self._keep_state("residual", round_, ".npy", lambda path: np.save(path, residual))

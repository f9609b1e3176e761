"""One federation job's settings, and how they travel to sites inside Flower ConfigRecords.

The hub decides everything about a run (vertical, resolved model config, strategy, privacy and
compression knobs) and sends it with every instruction, so a site needs nothing but its data
directory. The same dataclass is filled from `fedsite federate` options or from Flower's run config
(`[tool.flwr.app.config]`, `flwr run --run-config`), so simulation and deployment share one path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SITE_PREFIX = "site-"


@dataclass(frozen=True)
class FederationSettings:
    """Everything a federated run needs; defaults are a plain FedAvg without privacy or compression."""

    vertical: str = "medical"
    task_module: str = ""  # import path exposing TASK (defaults to the registry's entry for `vertical`)
    config_toml: str = ""  # the resolved model config, as written into model directories
    sites: int = 3
    rounds: int = 2
    local_epochs: int = 0  # 0: the model config's own epochs
    strategy: str = "fedavg"
    seed: int = 0
    data_root: str = ""  # simulation: site k reads DATA_ROOT/site-k[/SOURCE_SUFFIX]
    source_suffix: str = ""  # what Task.synthesize returned, relative to the site directory
    out_dir: str = ""
    resume: bool = False
    proximal_mu: float = 0.01  # used by fedprox only
    server_lr: float = 0.1  # fedadam
    server_momentum: float = 0.9  # fedavgm
    trim_fraction: float = 0.2
    krum_byzantine: int = 1
    min_results: int = 1
    round_timeout: float = 0.0  # seconds; 0 waits for every site
    node_wait: float = 60.0  # seconds to wait for sites to connect
    clip: float = 0.0
    noise: float = 0.0
    delta: float = 1e-5
    compression: str = "none"
    topk_fraction: float = 0.1
    cross_site: bool = True
    eval_split: str = "val"  # the split sites score every round (the last round also scores "test")
    eval_every: int = 1  # sites score the global model every k-th round (and always after the last)
    # boolean model-config keys switched off in every round but the last: post-hoc stages fitted on the
    # finished local model (medical's fp_reduction), which a later round's training would make stale
    final_round_only: tuple[str, ...] = ()  # Task.final_round_only declares a vertical's
    # sites carry their optimizer's moments (Adam's) from one round's fit to the next, stored per round
    # in the site's state directory (never sent): see common.task.fit_optimizer and the README
    keep_optimizer: bool = True
    # FedBN (Li et al., ICLR 2021): normalisation layers and fitted input statistics stay at each site
    # (federation/local_norm.py); the hub still aggregates them, for a site that has none of its own
    local_norm: bool = False
    # one learning-rate schedule over the whole run: round r's fit takes steps ((r-1)S, rS] of the
    # vertical's schedule stretched over all R rounds (common.task.fit_schedule), as a centralized
    # run's single fit would, instead of replaying the whole schedule in every round
    one_schedule: bool = False
    threads: int = 1
    fail_site: int = -1  # fault drill: this site fails every training round
    fail_mode: str = "error"  # error | hang
    extra: dict[str, Any] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        """Flat dict of Flower config values (str/int/float/bool only) for a ConfigRecord."""
        values = {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        values["final-round-only"] = ",".join(self.final_round_only)  # config values are scalars
        return values

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> FederationSettings:
        """Inverse of `to_config`; unknown keys are ignored, types follow the dataclass defaults."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        out = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name == "num_server_rounds":
                name = "rounds"
            if name not in known:
                continue
            default = known[name].default
            if isinstance(default, tuple):
                out[name] = config_keys(value)
            else:
                out[name] = type(default)(value) if not isinstance(default, bool) else _as_bool(value)
        return cls(**out)

    def replace(self, **changes: Any) -> FederationSettings:
        return dataclasses.replace(self, **changes)


def config_keys(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Config key names from "a, b" (a CLI option or a Flower config value) or a sequence of names."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(k.strip() for k in items if k.strip())


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def site_name(index: int) -> str:
    return f"{SITE_PREFIX}{index}"

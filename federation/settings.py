"""One federation job's settings, and how they travel to sites inside Flower ConfigRecords.

The hub decides everything about a run (vertical, resolved model config, strategy, privacy and
compression knobs) and sends it with every instruction, so a site needs nothing but its data
directory. The same dataclass is filled from `fedsite federate` options or from Flower's run config
(`[tool.flwr.app.config]`, `flwr run --run-config`), so simulation and deployment share one path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SITE_PREFIX = "site-"


def option(default: Any, flag: str = "", help: str = "") -> Any:
    """A settings field; with `flag`, also a `fedsite federate` option (federation/cli.py builds the
    command's options from these, so the CLI, Flower's run config and the API share one default)."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help} if flag else {})


@dataclass(frozen=True)
class FederationSettings:
    """Everything a federated run needs; defaults are a plain FedAvg without privacy or compression.

    These defaults are the only ones: `fedsite federate`'s options, `[tool.flwr.app.config]` in
    pyproject.toml and strategies.StrategyParams follow them (tests/test_federation_settings.py).
    """

    vertical: str = "medical"
    task_module: str = ""  # import path exposing TASK (defaults to the registry's entry for `vertical`)
    config_toml: str = ""  # the resolved model config, as written into model directories
    sites: int = option(3, "--sites", "Number of simulated sites (each gets its own synthetic data).")
    rounds: int = option(2, "--rounds", "Federated rounds.")
    local_epochs: int = option(0, "--local-epochs", "Epochs per site per round (0: the config's).")
    strategy: str = option("fedavg", "--strategy", "fedavg|fedprox|fedavgm|fedadam|median|trimmed-mean|krum.")
    seed: int = option(0, "--seed", "Seed for data, initial model, site training and DP noise.")
    data_root: str = ""  # simulation: site k reads DATA_ROOT/site-k[/SOURCE_SUFFIX]
    source_suffix: str = ""  # what Task.synthesize returned, relative to the site directory
    out_dir: str = ""
    resume: bool = False
    proximal_mu: float = option(0.01, "--mu", "FedProx proximal strength.")
    server_lr: float = option(0.1, "--server-lr", "FedAdam server learning rate.")
    server_momentum: float = option(0.9, "--server-momentum", "FedAvgM server momentum.")
    trim_fraction: float = 0.2  # trimmed-mean: share cut at each side
    krum_byzantine: int = 1  # Krum: sites assumed faulty
    min_results: int = option(1, "--min-results", "Fewest site updates needed to aggregate a round.")
    round_timeout: float = option(0.0, "--round-timeout", "Seconds to wait for sites (0: all).")
    node_wait: float = 60.0  # seconds to wait for sites to connect
    clip: float = option(0.0, "--clip", "DP: clip each site's update to this L2 norm (0: off).")
    noise: float = option(0.0, "--noise", "DP: Gaussian noise multiplier (std = noise * clip).")
    delta: float = option(1e-5, "--delta", "DP: delta of the reported (epsilon, delta).")
    compression: str = option("none", "--compression", "Update codec: none|int8|topk.")
    topk_fraction: float = option(0.1, "--topk", "Fraction of coordinates top-k keeps.")
    cross_site: bool = option(True, "--cross-site/--no-cross-site", "Train local-only models too.")
    # the split sites score every round (the last round also scores "test")
    eval_split: str = option("val", "--eval-split", "Split sites score every round: val or test.")
    eval_every: int = option(1, "--eval-every", "Sites score every k-th round (and the last).")
    # boolean model-config keys switched off in every round but the last: post-hoc stages fitted on the
    # finished local model (medical's fp_reduction), which a later round's training would make stale
    final_round_only: tuple[str, ...] = option(
        (), "--final-round-only", "Boolean config keys off before the last round (e.g. fp_reduction)."
    )  # Task.final_round_only declares a vertical's
    # sites carry their optimizer's moments (Adam's) from one round's fit to the next, stored per round
    # in the site's state directory (never sent): see common.task.fit_optimizer and the README
    keep_optimizer: bool = option(
        True,
        "--keep-optimizer/--fresh-optimizer",
        "Sites keep their optimizer's moments across rounds (stored at the site), or start fresh each round.",
    )
    # FedBN (Li et al., ICLR 2021): normalisation layers and fitted input statistics stay at each site
    # (federation/local_norm.py); the hub still aggregates them, for a site that has none of its own
    local_norm: bool = option(
        False,
        "--local-norm/--shared-norm",
        "FedBN: each site keeps its own normalisation layers and input statistics (never replaced by the hub's).",
    )
    # one learning-rate schedule over the whole run: round r's fit takes steps ((r-1)S, rS] of the
    # vertical's schedule stretched over all R rounds (common.task.fit_schedule), as a centralized
    # run's single fit would, instead of replaying the whole schedule in every round
    one_schedule: bool = option(
        False,
        "--one-schedule/--schedule-per-round",
        "One learning-rate schedule over all rounds (as a centralized run), or the whole schedule in every round.",
    )
    threads: int = 1  # torch intra-op threads at each site
    fail_site: int = option(-1, "--fail-site", "Fault drill: this site index fails every round.")
    fail_mode: str = option("error", "--fail-mode", "Fault drill: error or hang.")
    # SecAgg+ (federation/secagg.py): the hub learns only the weighted mean of the sites' updates
    secagg: bool = option(False, "--secagg/--no-secagg", "SecAgg+: the hub learns only the sites' mean update.")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default, by name."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        """The fields that are `fedsite federate` options, in declaration order."""
        return [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]

    def to_config(self) -> dict[str, Any]:
        """Flat dict of Flower config values (str/int/float/bool only) for a ConfigRecord."""
        values = {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}
        values["final-round-only"] = ",".join(self.final_round_only)  # config values are scalars
        return values

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> FederationSettings:
        """Inverse of `to_config`; unknown keys are ignored, types follow the dataclass defaults."""
        known = {f.name: f for f in dataclasses.fields(cls)}
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

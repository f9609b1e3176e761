"""`fedsite federate`: simulate N sites with Flower on this machine (thin: parse, call, map errors)."""

from __future__ import annotations

from pathlib import Path

import typer


def federate(
    vertical: str = typer.Option(..., "--vertical", help="medical, finance or manufacturing."),
    sites: int = typer.Option(3, "--sites", help="Number of simulated sites (each gets its own synthetic data)."),
    rounds: int = typer.Option(2, "--rounds", help="Federated rounds."),
    out: Path = typer.Option(..., "--out", help="Run directory: history.json, global_model/, report.md, data/."),
    strategy: str = typer.Option(
        "fedavg", "--strategy", help="fedavg|fedprox|fedavgm|fedadam|median|trimmed-mean|krum."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for data, initial model, site training and DP noise."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run directory's last checkpoint."),
    engine: str = typer.Option("ray", "--engine", help="ray (Flower's simulation engine) or inprocess (no Ray)."),
    scale: str = typer.Option("small", "--scale", help="Synthetic data size per site: tiny|small|full."),
    config: Path | None = typer.Option(None, "--config", help="TOML file overriding the vertical's model config."),
    set_: list[str] = typer.Option([], "--set", help="key=value override of the model config (repeatable)."),
    tiny: bool = typer.Option(False, "--tiny", help="Start from the vertical's tiny config (seconds per round)."),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Start from the vertical's small preset on small data (--scale small), as `train --quick`.",
    ),
    local_epochs: int = typer.Option(0, "--local-epochs", help="Epochs per site per round (0: the config's)."),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal strength."),
    server_lr: float = typer.Option(0.1, "--server-lr", help="FedAdam server learning rate."),
    server_momentum: float = typer.Option(0.9, "--server-momentum", help="FedAvgM server momentum."),
    keep_optimizer: bool = typer.Option(
        True,
        "--keep-optimizer/--fresh-optimizer",
        help="Sites keep their optimizer's moments across rounds (stored at the site), or start fresh each round.",
    ),
    local_norm: bool = typer.Option(
        False,
        "--local-norm/--shared-norm",
        help="FedBN: each site keeps its own normalisation layers and input statistics (never replaced by the hub's).",
    ),
    one_schedule: bool = typer.Option(
        False,
        "--one-schedule/--schedule-per-round",
        help="One learning-rate schedule over all rounds (as a centralized run), or the whole schedule in every round.",
    ),
    min_results: int = typer.Option(1, "--min-results", help="Fewest site updates needed to aggregate a round."),
    round_timeout: float = typer.Option(0.0, "--round-timeout", help="Seconds to wait for sites (0: all)."),
    clip: float = typer.Option(0.0, "--clip", help="DP: clip each site's update to this L2 norm (0: off)."),
    noise: float = typer.Option(0.0, "--noise", help="DP: Gaussian noise multiplier (std = noise * clip)."),
    delta: float = typer.Option(1e-5, "--delta", help="DP: delta of the reported (epsilon, delta)."),
    compression: str = typer.Option("none", "--compression", help="Update codec: none|int8|topk."),
    topk: float = typer.Option(0.1, "--topk", help="Fraction of coordinates top-k keeps."),
    cross_site: bool = typer.Option(True, "--cross-site/--no-cross-site", help="Train local-only models too."),
    eval_split: str = typer.Option("val", "--eval-split", help="Split sites score every round: val or test."),
    eval_every: int = typer.Option(1, "--eval-every", help="Sites score every k-th round (and the last)."),
    final_round_only: str = typer.Option(
        "", "--final-round-only", help="Boolean config keys off before the last round (e.g. fp_reduction)."
    ),
    fail_site: int = typer.Option(-1, "--fail-site", help="Fault drill: this site index fails every round."),
    fail_mode: str = typer.Option("error", "--fail-mode", help="Fault drill: error or hang."),
) -> None:
    """Simulate N sites with Flower: each trains on its own data, only model updates travel.

    Exits 3 (partial success) when a site failed or timed out in some round; the run still completed.
    """
    from common.errors import UserError
    from federation.settings import config_keys
    from federation.sim import ENGINES, simulate

    if quick and tiny:
        raise UserError("--quick and --tiny: choose one")
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: unknown (known: {', '.join(ENGINES)})")
    if scale not in ("tiny", "small", "full"):
        raise UserError(f"--scale {scale}: unknown (known: tiny, small, full)")
    if eval_split not in ("val", "test"):
        raise UserError(f"--eval-split {eval_split}: unknown (known: val, test)")
    if eval_every < 1:
        raise UserError(f"--eval-every {eval_every}: must be at least 1")
    if fail_mode not in ("error", "hang"):
        raise UserError(f"--fail-mode {fail_mode}: unknown (known: error, hang)")
    if clip < 0 or noise < 0 or not 0 < delta < 1:
        raise UserError("--clip/--noise must be >= 0 and --delta in (0, 1)")
    history = simulate(
        vertical,
        out,
        sites=sites,
        rounds=rounds,
        strategy=strategy,
        seed=seed,
        resume=resume,
        engine=engine,
        scale=scale,
        config_file=config,
        overrides=set_,
        preset="tiny" if tiny else "small" if quick else None,
        local_epochs=local_epochs,
        proximal_mu=mu,
        server_lr=server_lr,
        server_momentum=server_momentum,
        keep_optimizer=keep_optimizer,
        local_norm=local_norm,
        one_schedule=one_schedule,
        min_results=min_results,
        round_timeout=round_timeout,
        clip=clip,
        noise=noise,
        delta=delta,
        compression=compression,
        topk_fraction=topk,
        cross_site=cross_site,
        fail_site=fail_site,
        fail_mode=fail_mode,
        eval_split=eval_split,
        eval_every=eval_every,
        final_round_only=config_keys(final_round_only),
    )
    from common.errors import PartialSuccess
    from common.progress import log

    log(f"wrote {out / 'history.json'}, {out / 'global_model'}, {out / 'report.md'}")
    from federation.report import failed_sites

    failed = failed_sites(history)
    if failed:  # the run finished without them: a partial success, listed in report.md
        raise PartialSuccess(f"site(s) {', '.join(failed)} failed in some rounds; see {out / 'report.md'}", len(failed))

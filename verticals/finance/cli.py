"""`fedsite finance ...`: synth, train, score, update, evaluate, serve (thin: parse, call, map errors).

The Python functions behind each command are listed in verticals/finance/README.md ("Python API").
Heavy imports stay inside the commands so `fedsite --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from common.cli import QUICK_TRAIN_HELP
from common.errors import PartialSuccess, UserError

app = typer.Typer(no_args_is_help=True, help="Fraud detection: synth, train, score, update, evaluate, serve.")

_CONFIG = typer.Option(None, "--config", help="TOML file overriding the FinanceConfig defaults.")
_SET = typer.Option([], "--set", help="Override one config key (repeatable): --set epochs=3.")
_COLUMNS = typer.Option(
    None,
    "--columns",
    help="Column mapping for an export with other names, e.g. "
    "src_account=card1+addr1,timestamp=TransactionDT:seconds@2017-12-01,amount=TransactionAmt,is_fraud=isFraud.",
)
_FORMAT = typer.Option(None, "--format", help="Built-in importer: contract (default), amlworld, paysim, elliptic.")


def _not_input(out: Path, *inputs: Path) -> None:
    for item in inputs:
        if out.resolve() == item.resolve():
            raise UserError(f"{out}: output would overwrite the input {item}")


def _csv(data: Path) -> Path:
    """--data may name the CSV or the folder `synth --out` wrote (DIR/transactions.csv), as --data
    names a dataset folder in the other verticals."""
    return data / "transactions.csv" if data.is_dir() and (data / "transactions.csv").is_file() else data


def _config(
    config: Path | None, sets: list[str], columns: str | None = None, fmt: str | None = None, preset: str = "default"
):
    from common.config import resolve
    from verticals.finance.config import PRESETS, FinanceConfig

    cfg = resolve(FinanceConfig, config, sets, section="finance", base=PRESETS[preset])
    return _reading(cfg, columns, fmt)


def _reading(cfg, columns: str | None, fmt: str | None):
    """cfg with --columns / --format applied (checked at once, so a typo fails before any work)."""
    from common.config import replace
    from data_adapters.importers import mapping_for

    if columns is not None:
        cfg = replace(cfg, columns=columns)
    if fmt is not None:
        cfg = replace(cfg, format=fmt)
    mapping_for(cfg.format, cfg.columns)
    return cfg


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write transactions.csv into."),
    accounts: int | None = typer.Option(
        None, "--accounts", min=20, help="Number of accounts [default: 3000; 400 with --quick]."
    ),
    days: int | None = typer.Option(None, "--days", min=3, help="Days of activity [default: 30; 20 with --quick]."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    site: int = typer.Option(0, "--site", min=0, help="Site (bank) index: changes the customer mix."),
    sites: int = typer.Option(1, "--sites", min=1, help="Number of sites the mix is spread over."),
    n_sites: int | None = typer.Option(None, "--n-sites", min=1, hidden=True, help="Deprecated spelling of --sites."),
    fraud_rate: float = typer.Option(0.02, "--fraud-rate", min=0.001, max=0.5, help="Share of fraudulent rows."),
    quick: bool = typer.Option(False, "--quick", help="Small data (what --quick training is sized for)."),
) -> None:
    """Write DIR/transactions.csv: AMLSim-style activity with laundering typologies (labelled)."""
    from data_adapters.synth.transactions import write
    from verticals.finance.task import SCALES

    default_accounts, default_days = SCALES["small" if quick else "full"]
    accounts, days = accounts or default_accounts, days or default_days

    if n_sites is not None:
        from common.progress import log

        log("warning: --n-sites is deprecated; say --sites (the same spelling as every other command)")
        sites = n_sites
    path = write(out, accounts, days, seed=seed, site=site, n_sites=sites, fraud_rate=fraud_rate)
    typer.echo(str(path))


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Labelled transactions: the CSV, or the folder `synth --out` wrote."),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    config: Path | None = _CONFIG,
    sets: list[str] = _SET,
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    columns: str | None = _COLUMNS,
    fmt: str | None = _FORMAT,
    quick: bool = typer.Option(False, "--quick", help=QUICK_TRAIN_HELP),
    holdout: float = typer.Option(
        0.2,
        "--holdout",
        min=0.0,
        max=0.5,
        help="Latest share of the period (by time) kept out of training and reported as holdout_* metrics; "
        "0 trains on every row.",
    ),
) -> None:
    """Train the fraud model on the valid rows of --data (every extra column is a feature)."""
    from common.runs import read_metadata
    from verticals.finance.api import train_model

    data = _csv(data)
    _not_input(out, data)
    cfg = _config(config, sets, columns, fmt, preset="small" if quick else "default")
    metrics = train_model(data, out, cfg, seed=seed, holdout=holdout)
    typer.echo(json.dumps(metrics, indent=2))
    rejected = read_metadata(out).get("rows_rejected", 0)
    if rejected:
        raise PartialSuccess(f"{rejected} row(s) of {data} rejected and not used (see `finance score` for a list)")


@app.command()
def score(
    data: Path = typer.Option(
        ..., "--data", help="Transactions to score: the CSV, or the folder holding transactions.csv."
    ),
    model: Path = typer.Option(..., "--model", help="Model directory."),
    out: Path = typer.Option(..., "--out", help="Scores CSV to write (rejected.csv goes beside it)."),
    columns: str | None = typer.Option(None, "--columns", help="Column mapping (default: the model's)."),
    fmt: str | None = typer.Option(None, "--format", help="Built-in importer (default: the model's)."),
    explain: bool = typer.Option(
        False, "--explain", help="Add reason_1..3: the feature groups that moved each score most (occlusion)."
    ),
) -> None:
    """Write txn_id,fraud_probability for every valid row (input order); bad rows go to rejected.csv."""
    from verticals.finance.api import score_csv

    data = _csv(data)
    _not_input(out, data)
    _not_input(out.parent / "rejected.csv", data)
    report = score_csv(data, model, out, columns=columns, fmt=fmt, explain=explain)
    typer.echo(json.dumps(report.__dict__, indent=2))
    if report.rejected:
        raise PartialSuccess(f"{report.rejected} of {report.rows_read} rows rejected: see {report.rejected_path}")


@app.command()
def update(
    model: Path = typer.Option(..., "--model", help="Model directory to start from (left unchanged)."),
    data: Path = typer.Option(..., "--data", help="Newly labelled transactions: the CSV, or its folder."),
    out: Path = typer.Option(..., "--out", help="New model directory."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    force: bool = typer.Option(
        False, "--force", help="Go on when the held-out period has no fraud (before/after cannot be compared)."
    ),
) -> None:
    """Fine-tune on newly labelled rows; prints metrics before and after on a held-out later period."""
    from common.strict_json import to_json
    from verticals.finance.api import update_model

    data = _csv(data)
    _not_input(out, model, data)
    typer.echo(to_json(update_model(model, data, out, seed=seed, force=force)))


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data", help="Labelled transactions: the CSV, or its folder."),
    scores: Path = typer.Option(..., "--scores", help="Scores CSV from `finance score`."),
    columns: str | None = _COLUMNS,
    fmt: str | None = _FORMAT,
    out: Path | None = typer.Option(
        None, "--out", help="Directory for pr_curve.png and thresholds.csv (alerts/day, precision, recall)."
    ),
) -> None:
    """Print JSON with auprc, roc_auc, recall_at_1pct_fpr, f1_best (and recall per typology)."""
    from data_adapters.importers import mapping_for
    from verticals.finance.evaluate import evaluate_scores

    mapping, data = mapping_for(fmt or "contract", columns or ""), _csv(data)
    typer.echo(json.dumps(evaluate_scores(data, scores, mapping, out_dir=out), indent=2))


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="Model directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    state: Path | None = typer.Option(
        None, "--state", help="Account-state file: restored on start, saved on a schedule and on shutdown."
    ),
    warm_start: Path | None = typer.Option(
        None, "--warm-start", help="Transactions CSV replayed (time order) before the first request."
    ),
    snapshot_every: float = typer.Option(60.0, "--snapshot-every", min=1.0, help="Seconds between state saves."),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="File holding a bearer token that POST /score must send."
    ),
    remember: int = typer.Option(
        1_000_000, "--remember-ids", min=1, help="Recent txn_ids kept for duplicate detection."
    ),
) -> None:
    """HTTP scoring: POST /score (object or list), GET /health, GET /metrics (Prometheus)."""
    from verticals.finance.serve import serve as run

    run(
        model,
        host,
        port,
        state=state,
        warm=warm_start,
        snapshot_every=snapshot_every,
        token_file=token_file,
        remember=remember,
    )

"""Item 4 of issue 15: `finance train` on a bank's month (1M transactions x 100 columns), stage by stage.

Why its own module: the quality benchmarks (`finance.py`, `finance_peer.py`) run on ~13k-140k rows;
this one asks whether the default `finance train` fits a bank's month in 15 minutes and 4 GB on 2
cores, and where the time goes. It writes a synthetic export of about N rows (the generator's
transactions plus benchmark (b)'s 32 bank columns plus 66 more: numbers with missing values,
categories of 3 to 2,000 values, identifiers and free text: 98 extra columns beside the 9
contract ones, 107 in all), runs the real CLI (`fedsite finance train`, then `fedsite finance
score` on the first `--score-rows` rows) as child processes, and reports per-stage seconds, CPU
seconds and rows/s (from the model's `metadata.json`), peak resident memory of each child
(os.wait4's rusage) and the load average beside each.

    python benchmarks/finance.py --scale --out /tmp/fin-scale --rows 100000
    python benchmarks/finance.py --scale --out /tmp/fin-scale-1m --rows 1000000 --score-rows 200000
    python benchmarks/finance.py --scale --out /tmp/fin-scale-1m --rows 1000000 --score-only --score-repeats 3

The export is written once per (rows, seed) and reused; `--set k=v` passes config overrides;
`--score-only` re-measures scoring with the model (and training figures) of an earlier run.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS_PER_ACCOUNT_MONTH = 47  # the generator's density: 3,000 accounts x 30 days -> ~142k rows
DAYS = 30
N_NUMERIC, N_CATEGORICAL, N_TEXT = 40, 20, 6  # beside bank_columns' 32: 98 extra columns
STAGES = (
    "reading",
    "featurising",
    "label history",
    "network fit",
    "tree head fit",
    "calibration",
    "evaluating",
    "export",
)


def _more_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """66 columns a bank export also has: numbers (some missing), categories, identifiers, free text."""
    out: dict[str, np.ndarray] = {}
    for i in range(N_NUMERIC):
        if i % 3 == 0:
            values = rng.poisson(rng.uniform(0.5, 20.0), n).astype(np.float64)
        elif i % 3 == 1:
            values = np.round(rng.lognormal(3.0, 1.2, n), 2)
        else:
            values = np.round(rng.normal(0.0, 1.0, n), 3)
        if i % 4 == 0:
            values[rng.random(n) < 0.1 + 0.02 * i] = np.nan
        out[f"x_num{i + 1:02d}"] = values
    for i in range(N_CATEGORICAL):
        k = int(np.geomspace(3, 2000, N_CATEGORICAL)[i])
        p = 1.0 / np.arange(1, k + 1) ** 1.1
        codes = rng.choice(k, n, p=p / p.sum())
        vocab = np.array([f"c{i + 1}_{j}" for j in range(k)], dtype=object)
        out[f"x_cat{i + 1:02d}"] = vocab[codes]
    words = np.array("card paid online store refund fee transfer rent gift loan shop cash atm".split(), dtype=object)
    for i in range(N_TEXT):
        if i % 2 == 0:
            out[f"x_text{i + 1}"] = np.char.add("ref", rng.integers(0, 10**9, n).astype(str)).astype(object)
        else:
            picks = words[rng.integers(0, len(words), (n, 3))]
            out[f"x_text{i + 1}"] = (
                picks[:, 0]
                + " "
                + picks[:, 1]
                + " "
                + picks[:, 2]
                + " "
                + rng.integers(0, 10**6, n).astype(str).astype(object)
            )
    return out


def _as_text(values: np.ndarray) -> np.ndarray:
    """CSV cells of a column: numbers in their shortest form, '' where missing."""
    if values.dtype == object:
        return values
    text = values.astype(str).astype(object)
    text[np.isnan(values)] = ""
    return text


def write_scale_export(out: Path, rows: int, seed: int = 0, chunk: int = 100_000) -> Path:
    """OUT/export_ROWS_sSEED.csv: about `rows` generator transactions with 98 extra columns (written once)."""
    from itertools import islice

    from data_adapters.synth.bank_columns import COLUMNS, bank_columns
    from data_adapters.synth.transactions import write

    path = out / f"export_{rows}_s{seed}.csv"
    if path.is_file():
        return path
    accounts = max(200, round(rows / ROWS_PER_ACCOUNT_MONTH))
    t = time.perf_counter()
    base = write(out / f"synth_{rows}_s{seed}", accounts, DAYS, seed=seed)
    print(f"generated {accounts} accounts x {DAYS} days in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    rng = np.random.default_rng(seed + 104729)
    tmp = path.with_suffix(".tmp")
    with open(base, newline="", encoding="utf-8") as src, open(tmp, "w", newline="", encoding="utf-8") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        at = {name: i for i, name in enumerate(header)}
        more = list(_more_columns(rng, 1))
        writer.writerow([*header, *COLUMNS, *more])
        for i in range(10**9):
            block = list(islice(reader, chunk))
            if not block:
                break
            label = np.array([int(r[at["is_fraud"]]) for r in block])
            bank = bank_columns(np.array([r[at["typology"]] for r in block], dtype=object), label, seed + i)
            cols = [bank[name] for name in COLUMNS]
            cols += [_as_text(v) for v in _more_columns(rng, len(block)).values()]
            writer.writerows(row + list(extra) for row, extra in zip(block, zip(*cols)))
    os.replace(tmp, path)
    print(f"wrote {path} in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return path


def head_rows(source: Path, rows: int) -> Path:
    """The first `rows` data lines of `source` (the scoring input), written once."""
    path = source.with_name(f"{source.stem}_first{rows}.csv")
    if not path.is_file():
        with open(source, encoding="utf-8") as src, open(path.with_suffix(".tmp"), "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i > rows:
                    break
                dst.write(line)
        os.replace(path.with_suffix(".tmp"), path)
    return path


def run_child(command: list[str]) -> dict:
    """Run a CLI command; wall and CPU seconds, peak RSS (GiB, the child and its waited-for children), load."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    env = os.environ | {"FEDSITE_THREADS": os.environ.get("FEDSITE_THREADS", "1")}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=None, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(command)} failed with exit {proc.returncode}")
    return {
        "seconds": wall,  # of the child process, start-up included
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_gb": usage.ru_maxrss / 1024**2,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "stdout": stdout,
    }


def measure(args) -> dict:
    """Train on the export, then score its first rows; returns every figure of the table."""
    fedsite = [sys.executable, "-m", "fedsite"] if not Path(sys.executable).with_name("fedsite").exists() else [
        str(Path(sys.executable).with_name("fedsite"))
    ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    export = write_scale_export(args.out, args.rows, args.seed)
    with open(export, encoding="utf-8") as handle:
        columns = len(next(csv.reader(handle)))
    model = args.out / f"model_{args.rows}{args.tag}"
    sets = [x for s in args.set for x in ("--set", s)]
    saved = args.out / f"scale_{args.rows}{args.tag}.json"
    if args.score_only and saved.is_file():  # re-measure scoring with the model and figures of an earlier run
        train = json.loads(saved.read_text())["train"]
    else:
        train = run_child([*fedsite, "finance", "train", "--data", str(export), "--out", str(model),
                           "--seed", str(args.seed), *sets])  # fmt: skip
    meta = json.loads((model / "metadata.json").read_text())
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": meta["stages"]["reading"]["rows"],
        "columns": columns,
        "extra_columns": columns - 9,
        "features_used": len(meta.get("feature_columns", [])),
        "train": {k: v for k, v in train.items() if k != "stdout"},
        "stages": meta.get("stages", {}),
        "metrics": meta.get("metrics", {}),
        "sets": args.set,
    }
    score_csv = head_rows(export, args.score_rows)
    scores = []
    for _ in range(args.score_repeats):
        run = run_child([*fedsite, "finance", "score", "--data", str(score_csv), "--model", str(model),
                         "--out", str(args.out / "scores" / "scores.csv")])  # fmt: skip
        report = json.loads(run.pop("stdout"))
        scores.append(
            run
            | {
                "txn_per_s": args.score_rows / run["seconds"],
                # score_csv alone (load the model, read, validate, featurise, infer, write), as the
                # 34k txn/s figure of benchmarks/finance.py --speed-only was measured: no interpreter start
                "score_seconds": report["seconds"],
                "score_cpu_seconds": report.get("cpu_seconds", float("nan")),
                "score_txn_per_s": args.score_rows / report["seconds"],
                "score_txn_per_cpu_s": args.score_rows / report.get("cpu_seconds", float("nan")),
            }
        )
    result["score"] = sorted(scores, key=lambda r: r["score_txn_per_s"])[len(scores) // 2]  # the median run
    result["score"]["rows"] = args.score_rows
    return result


def table(result: dict) -> str:
    """Markdown: one row per stage (wall and CPU rates), the whole train, then the scoring rows."""
    train, score = result["train"], result["score"]
    lines = [
        f"{result['rows']:,} rows x {result['extra_columns']} extra columns ({result['features_used']} used), "
        f"{result['date']}, overrides {result['sets'] or 'none'}; load average (1 min) at the start "
        f"{train['load_before']:.1f}",
        "",
        "| stage | wall s (CPU s) | rows (network: rows x epochs) | rows/s wall | rows per CPU-s | peak GiB so far |",
        "|---|---|---|---|---|---|",
    ]
    for name in STAGES:
        s = result["stages"].get(name)
        if s:
            cpu = s.get("cpu_seconds", float("nan"))
            lines.append(
                f"| {name} | {s['seconds']:.1f} ({cpu:.1f}) | {s['rows']:,} | {s['rows_per_s']:,.0f} "
                f"| {s['rows'] / max(cpu, 1e-9):,.0f} | {s['peak_gb']:.2f} |"
            )
    lines.append(
        f"| **`finance train`, whole process** | **{train['seconds']:.0f}** ({train['cpu_seconds']:.0f}) "
        f"| {result['rows']:,} | {result['rows'] / train['seconds']:,.0f} "
        f"| {result['rows'] / train['cpu_seconds']:,.0f} | **{train['peak_gb']:.2f}** |"
    )
    lines.append(
        f"| `finance score` of the first {score['rows']:,} rows: score_csv (model load to scores.csv) "
        f"| {score['score_seconds']:.1f} ({score['score_cpu_seconds']:.1f}) | {score['rows']:,} "
        f"| **{score['score_txn_per_s']:,.0f}** | {score['score_txn_per_cpu_s']:,.0f} | |"
    )
    lines.append(
        f"| the same, whole process (with Python and library start-up) | {score['seconds']:.1f} "
        f"({score['cpu_seconds']:.1f}) | {score['rows']:,} | {score['txn_per_s']:,.0f} "
        f"| {score['rows'] / score['cpu_seconds']:,.0f} | {score['peak_gb']:.2f} |"
    )
    lines.append("")
    lines.append(
        f"load average (1 min) train {train['load_before']:.1f} -> {train['load_after']:.1f}, "
        f"score {score['load_before']:.1f} -> {score['load_after']:.1f} (2 cores); "
        f"holdout AUPRC {result['metrics'].get('holdout_auprc', float('nan')):.3f}"
    )
    return "\n".join(lines)


def main(args) -> int:
    """`benchmarks/finance.py --scale`: prints the table, writes OUT/scale_ROWS.json."""
    result = measure(args)
    (args.out / f"scale_{args.rows}{args.tag}.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0

"""Finance benchmark: fused TCN+GNN vs its ablations vs two gradient-boosting baselines, one run.

Why one script and one run: the machine is shared and noisy, so every figure is measured beside
its peer in the same process (quality against the HistGradientBoosting baselines and the TCN-only /
GNN-only ablations on the same 70/30 time split; ONNX Runtime scoring throughput against eager
torch on the same rows; serving latency under a fixed-rate load generator on 127.0.0.1).

    python benchmarks/finance.py --out /tmp/finbench            # >= 3000 accounts, >= 100k rows
    python benchmarks/finance.py --accounts 400 --days 20 --epochs 1 --serve-seconds 3   # smoke run

    python benchmarks/finance.py --scale --out /tmp/fin-scale --rows 1000000   # issue 15 item 4 (finance_scale.py)

Prints markdown tables and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {"serve_p50_ms": 10.0, "serve_p99_ms": 50.0, "batch_txn_per_s": 20_000.0, "train_minutes": 15.0}


def _quality(args, data_csv: Path, out: Path) -> tuple[dict, dict]:
    import pickle

    import torch

    from common import runs
    from common.device import seed_everything, set_threads
    from verticals.finance import TASK
    from verticals.finance.api import export_bytes
    from verticals.finance.baselines import fit_baseline, predict_baseline
    from verticals.finance.config import FinanceConfig
    from verticals.finance.data import split_by_time
    from verticals.finance.evaluate import fraud_metrics

    set_threads(args.train_threads)
    cfg = FinanceConfig(epochs=args.epochs, threads=args.score_threads)
    start = time.perf_counter()
    from verticals.finance.data import load_dataset

    data = load_dataset(data_csv, cfg)
    featurise_s = time.perf_counter() - start
    train, test = split_by_time(data, "train", 0.7), split_by_time(data, "test", 0.7)
    print(f"rows {len(data)} train {len(train)} test {len(test)} featurised in {featurise_s:.1f}s", file=sys.stderr)
    results, timings = {}, {"featurise_s": featurise_s}
    for kind in ("raw", "graph"):
        t = time.perf_counter()
        model = fit_baseline(train, kind, seed=args.seed)
        if kind == "graph":  # the speed section scores with it too (a peer measured in the same run)
            (out / "hgb_graph.pkl").write_bytes(pickle.dumps(model))
        results[f"hgb_{kind}"] = fraud_metrics(test.label, predict_baseline(model, test, kind), test.typology)
        timings[f"hgb_{kind}_train_s"] = time.perf_counter() - t
        print(f"hgb_{kind}: auprc {results[f'hgb_{kind}']['auprc']:.3f}", file=sys.stderr)
    for arch in ("fused", "tcn", "gnn"):
        seed_everything(args.seed)
        arch_cfg = FinanceConfig(arch=arch, epochs=args.epochs, threads=args.score_threads)
        model = TASK.build_model(arch_cfg)
        t = time.perf_counter()
        TASK.fit(model, train, arch_cfg)
        timings[f"{arch}_train_s"] = time.perf_counter() - t
        results[arch] = TASK.evaluate(model, test, arch_cfg)
        print(f"{arch}: auprc {results[arch]['auprc']:.3f} ({timings[f'{arch}_train_s']:.0f}s)", file=sys.stderr)
        if arch == "fused":
            runs.save_model(out / "model", "finance", model, arch_cfg, metrics=results[arch], seed=args.seed,
                            extra_files=export_bytes(model, arch_cfg))  # fmt: skip
    torch.set_num_threads(max(args.score_threads, 1))
    return results, timings


def _graph_baseline(args, data_csv: Path, out: Path):
    """The HGB graph-feature baseline of the quality run (refitted on the 70 % split if not saved)."""
    import pickle

    path = out / "hgb_graph.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    from verticals.finance.baselines import fit_baseline
    from verticals.finance.config import FinanceConfig
    from verticals.finance.data import load_dataset, split_by_time

    print("fitting the HGB graph baseline for the speed peer (not saved by this --out's quality run)", file=sys.stderr)
    model = fit_baseline(split_by_time(load_dataset(data_csv, FinanceConfig()), "train", 0.7), "graph", seed=args.seed)
    path.write_bytes(pickle.dumps(model))
    return model


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _throughput(args, data_csv: Path, out: Path) -> dict:
    """Rows/s of `score` end to end (read, validate, featurise, infer, write) and of the scorer core,
    beside two peers on the same rows in the same run: eager torch, and the HGB graph baseline
    (featurise + graph features + predict_proba). Wall-clock rates depend on what else the shared
    machine runs; rates per CPU-second of this process much less so, and the ratios to the peers
    least of all."""
    from common.device import set_threads
    from common.runs import load_model
    from data_adapters.transactions import read_transactions, time_order
    from verticals.finance.api import score_csv
    from verticals.finance.baselines import graph_features
    from verticals.finance.data import featurise_all
    from verticals.finance.infer import StreamingScorer

    set_threads(args.score_threads)
    os.environ["FEDSITE_THREADS"] = str(args.score_threads)
    runs = []
    for _ in range(args.repeats):  # median of a few: the other users' load comes and goes
        load = os.getloadavg()[0]
        wall, cpu = _timed(lambda: runs.append(score_csv(data_csv, out / "model", out / "scores.csv")))
        runs[-1] = (runs[-1].scored / wall, runs[-1].scored / cpu, load)
    wall_rates, cpu_rates, loads = (sorted(x) for x in zip(*runs))
    loaded = load_model(out / "model")
    txns, _ = read_transactions(data_csv)
    txns = txns.take(time_order(txns))
    cols = (txns.ts, txns.src, txns.dst, txns.amount, txns.channel)
    n = len(txns)
    rates = {
        "end_to_end_onnxruntime": wall_rates[len(runs) // 2],
        "end_to_end_per_cpu_s": cpu_rates[len(runs) // 2],
        "end_to_end_runs": runs,
        "loadavg_1min": loads[len(runs) // 2],
    }
    for name, onnx in (("core_onnxruntime", out / "model" / "model.onnx"), ("core_torch", None)):
        scorer = StreamingScorer(loaded.model, loaded.cfg, onnx)
        wall, cpu = _timed(lambda scorer=scorer: scorer.score(*cols))
        rates[name], rates[f"{name}_per_cpu_s"] = n / wall, n / cpu
    hgb = _graph_baseline(args, data_csv, out)
    wall, cpu = _timed(lambda: hgb.predict_proba(graph_features(featurise_all(txns, loaded.cfg)))[:, 1])
    rates["core_hgb_graph"], rates["core_hgb_graph_per_cpu_s"] = n / wall, n / cpu
    rates["rows"] = n
    rates["onnxruntime_vs_torch"] = rates["core_onnxruntime"] / rates["core_torch"]
    rates["onnxruntime_vs_hgb_graph"] = rates["core_onnxruntime"] / rates["core_hgb_graph"]
    rates["onnxruntime_vs_hgb_graph_per_cpu_s"] = (
        rates["core_onnxruntime_per_cpu_s"] / rates["core_hgb_graph_per_cpu_s"]
    )
    return rates


def _load(port: int, rows: list[dict], rate: float, seconds: float, workers: int) -> dict:
    """Open-loop load at `rate` req/s over `workers` keep-alive connections, from ONE thread.

    Non-blocking sockets and a selector instead of a thread per connection: a Python thread that
    wakes up to send must first win the GIL (up to the 5 ms switch interval when another thread is
    parsing a response), and that wait was counted as server latency. Latency runs from each
    request's *scheduled* time, so a stalled server cannot hide its queue (no coordinated omission);
    at most `workers` requests are in flight, later ones wait (and that wait counts)."""
    import re
    import selectors
    from collections import deque

    n = min(len(rows), int(rate * seconds))
    head = "POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    requests = []
    for row in rows[:n]:
        body = json.dumps(row).encode()
        requests.append(head.format(len(body)).encode() + body)
    length = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
    latencies, statuses = np.zeros(n), np.zeros(n, dtype=int)
    selector = selectors.SelectSelector()  # select(2) sleeps to the microsecond; epoll rounds up to 1 ms
    idle, inflight, buffers = deque(), {}, {}  # FIFO: every connection stays warm (uvicorn drops idle ones)
    for _ in range(workers):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(conn, selectors.EVENT_READ)
        idle.append(conn)
        buffers[conn] = b""
    start = time.perf_counter() + 0.2
    sent = done = 0
    while done < n:
        now = time.perf_counter()
        while sent < n and idle and start + sent / rate <= now:
            conn = idle.popleft()
            conn.sendall(requests[sent])  # < 1 kB: fits the socket buffer at once
            inflight[conn] = sent
            sent += 1
        timeout = max(0.0, start + sent / rate - time.perf_counter()) if sent < n and idle else 1.0
        for key, _ in selector.select(timeout):
            conn = key.fileobj
            data = conn.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            buf = buffers[conn] + data
            end = buf.find(b"\r\n\r\n")
            size = int(length.search(buf, 0, end).group(1)) if end >= 0 else -1
            if end < 0 or len(buf) < end + 4 + size:
                buffers[conn] = buf
                continue
            i = inflight.pop(conn)
            latencies[i] = time.perf_counter() - (start + i / rate)
            statuses[i] = int(buf[9:12])
            buffers[conn] = buf[end + 4 + size :]
            idle.append(conn)
            done += 1
    elapsed = time.perf_counter() - start
    for conn in buffers:
        selector.unregister(conn)
        conn.close()
    lat = latencies * 1000
    return {
        "requests": n,
        "failures": int((statuses != 200).sum()),
        "offered_rps": rate,
        "achieved_rps": n / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "workers": workers,
    }


def _serving(args, data_csv: Path, out: Path) -> dict:
    """Latency of `fedsite finance serve` under an open-loop load generator in its own process.

    Three processes: the server, the load generator (`--loadgen`: stdlib + numpy only, GC off) and
    this one, which only waits. The generator used to run as threads inside this benchmark process,
    which holds torch, the data and the models (a heavy interpreter whose GIL and GC pauses landed in
    the measured latency).
    """
    import csv

    from common.loopback import get
    from verticals.finance.serve_process import serving

    rows = list(csv.DictReader(data_csv.open()))
    rows = rows[int(0.7 * len(rows)) :]  # the test period, in time order
    env = {**os.environ, "FEDSITE_THREADS": "1"}
    with serving(out / "model", env=env) as served:
        port = served.port
        bodies = out / "serve_requests.jsonl"
        bodies.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        gen = [sys.executable, str(Path(__file__).resolve()), "--loadgen", str(bodies), "--port", str(port)]
        gen += ["--rate", str(args.rate), "--serve-seconds", str(args.serve_seconds)]
        gen += ["--max-in-flight", str(args.max_in_flight), "--warmup", "200"]
        load_before = os.getloadavg()[0]
        done = subprocess.run(gen, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the load generator failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout)
        result["loadavg_1min"] = max(load_before, os.getloadavg()[0])
        # the server's own view: time from request parsed to response built (its /metrics summary)
        for line in get(port, "/metrics")[1].splitlines():
            if line.startswith("fedsite_finance_request_seconds{"):
                q = line.split('quantile="')[1].split('"')[0]
                result[f"server_p{float(q) * 100:g}_ms"] = float(line.split()[-1]) * 1000
        return result


def _loadgen_main(args) -> int:
    """`--loadgen FILE`: warm the server up, then run `_load` and print its JSON (a separate process)."""
    import gc
    import http.client

    gc.disable()  # a few thousand small objects: no collection pauses inside the measurement
    rows = [json.loads(line) for line in Path(args.loadgen).read_text().splitlines() if line]
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
    for row in rows[: args.warmup]:  # first requests pay for lazy initialisation
        conn.request("POST", "/score", json.dumps(row).encode(), {"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()
    print(json.dumps(_load(args.port, rows[args.warmup :], args.rate, args.serve_seconds, args.max_in_flight)))
    return 0


def _honest_ratios(results: dict) -> dict:
    """The issue asked for fused AUPRC >= 2x the graph baseline's; with that baseline above 0.5 no
    model can reach it (AUPRC <= 1). These are the nearest comparisons that can still show a 2x gap:
    how much of the baseline's remaining error the fused model removes."""
    f, g = results["fused"], results["hgb_graph"]
    typologies = [k for k in f if k.startswith("recall_") and k != "recall_at_1pct_fpr"]
    worst = min(typologies, key=lambda k: g.get(k, 1.0)) if typologies else None
    out = {
        "auprc_error_ratio": (1 - g["auprc"]) / max(1 - f["auprc"], 1e-9),
        "miss_rate_at_1pct_fpr_ratio": (1 - g["recall_at_1pct_fpr"]) / max(1 - f["recall_at_1pct_fpr"], 1e-9),
    }
    if worst:
        out.update(
            {
                "baseline_hardest_typology": worst[7:],
                "hardest_typology_recall": (f[worst], g[worst]),
                "hardest_typology_recall_ratio": f[worst] / max(g[worst], 1e-9),
            }
        )
    return out


def _table(results: dict, timings: dict, rates: dict, serving: dict) -> str:
    graph = results["hgb_graph"]["auprc"]
    lines = [
        "| model | AUPRC | x graph baseline | ROC AUC | recall@1%FPR | best F1 | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("fused", "tcn", "gnn", "hgb_graph", "hgb_raw"):
        r = results[name]
        seconds = timings.get(f"{name}_train_s", 0.0)
        lines.append(
            f"| {name} | {r['auprc']:.3f} | {r['auprc'] / max(graph, 1e-9):.2f} | {r['roc_auc']:.3f} "
            f"| {r['recall_at_1pct_fpr']:.3f} | {r['f1_best']:.3f} | {seconds:.0f} |"
        )
    honest = _honest_ratios(results)
    lines += [
        "",
        "| fused vs HGB graph baseline (the 2x AUPRC target cannot hold: baseline AUPRC > 0.5) | ratio |",
        "|---|---|",
        f"| AUPRC error, (1 - AUPRC_hgb) / (1 - AUPRC_fused) | {honest['auprc_error_ratio']:.2f}x |",
        "| miss rate at 1% FPR, (1 - recall_hgb) / (1 - recall_fused) "
        f"| {honest['miss_rate_at_1pct_fpr_ratio']:.2f}x |",
    ]
    if "baseline_hardest_typology" in honest:
        f, g = honest["hardest_typology_recall"]
        lines.append(
            f"| recall at 1% FPR on the baseline's hardest typology ({honest['baseline_hardest_typology']}): "
            f"{f:.2f} vs {g:.2f} | {honest['hardest_typology_recall_ratio']:.2f}x |"
        )
    typologies = sorted(k for k in results["fused"] if k.startswith("recall_") and k != "recall_at_1pct_fpr")
    lines += ["", "| recall at 1% FPR | " + " | ".join(t[7:] for t in typologies) + " |"]
    lines.append("|---" * (len(typologies) + 1) + "|")
    for name in ("fused", "tcn", "gnn", "hgb_graph", "hgb_raw"):
        cells = " | ".join(f"{results[name].get(t, float('nan')):.2f}" for t in typologies)
        lines.append(f"| {name} | {cells} |")
    runs = ", ".join(f"{w:,.0f}" for w, _, _ in rates["end_to_end_runs"])
    lines += [
        "",
        f"| speed ({rates['rows']:,} rows; 1-min load average {rates['loadavg_1min']:.1f} on 2 cores) "
        "| measured | target |",
        "|---|---|---|",
        f"| batch `score` end to end, median of {len(rates['end_to_end_runs'])} (txn/s, wall; runs: {runs}) "
        f"| {rates['end_to_end_onnxruntime']:,.0f} | >= 20,000 |",
        f"| the same per CPU-second this process used | {rates['end_to_end_per_cpu_s']:,.0f} | |",
        f"| scorer core, ONNX Runtime: featurise + infer (txn/s wall; per CPU-s) "
        f"| {rates['core_onnxruntime']:,.0f}; {rates['core_onnxruntime_per_cpu_s']:,.0f} | |",
        "| peer: eager torch (txn/s wall; per CPU-s) "
        f"| {rates['core_torch']:,.0f}; {rates['core_torch_per_cpu_s']:,.0f} | |",
        f"| peer: HGB graph baseline, featurise + predict (txn/s wall; per CPU-s) "
        f"| {rates['core_hgb_graph']:,.0f}; {rates['core_hgb_graph_per_cpu_s']:,.0f} | |",
        f"| ONNX Runtime / torch (wall) | {rates['onnxruntime_vs_torch']:.2f}x | |",
        f"| ONNX Runtime / HGB graph baseline (wall; per CPU-s) | {rates['onnxruntime_vs_hgb_graph']:.2f}x; "
        f"{rates['onnxruntime_vs_hgb_graph_per_cpu_s']:.2f}x | |",
        f"| serving p50 at {serving['offered_rps']:.0f} req/s (ms; 1-min load {serving['loadavg_1min']:.1f}) "
        f"| {serving['p50_ms']:.2f} | <= 10 |",
        f"| serving p99 at {serving['offered_rps']:.0f} req/s (ms) | {serving['p99_ms']:.2f} | <= 50 |",
        f"| serving max (ms); server-side scoring p50 / p99 (ms) | {serving['max_ms']:.1f}; "
        f"{serving.get('server_p50_ms', float('nan')):.2f} / {serving.get('server_p99_ms', float('nan')):.2f} | |",
        f"| serving achieved req/s, failures | {serving['achieved_rps']:.0f}, {serving['failures']} | |",
        f"| fused training time (min) | {timings['fused_train_s'] / 60:.1f} | <= 15 |",
    ]
    return "\n".join(lines)


def _peer_main(args) -> int:
    """`--peer`: the item-3 tables (fedsite, ablations, peer) for (a), (b) or for --data."""
    from benchmarks.finance_peer import run, synth_exports, table
    from verticals.finance.config import FinanceConfig

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    from common.config import resolve

    base = FinanceConfig(epochs=args.epochs, columns=args.columns)
    cfg = resolve(FinanceConfig, None, args.set, section="finance", base=base)
    if args.data:
        datasets = {args.data.stem: args.data}
    else:
        datasets = synth_exports(args.out, args.accounts, args.days, args.seed)
    results, tables = {}, []
    for name, path in datasets.items():
        say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

        def partial(result: dict, name: str = name) -> None:  # every finished seed leaves its table
            (args.out / f"peer-{name}-partial.md").write_text(table(name, result) + "\n")
            (args.out / f"peer-{name}-partial.json").write_text(json.dumps(result, indent=2, default=float))

        results[name] = run(
            path,
            cfg,
            seeds,
            log=say,
            network=not args.skip_network,
            column_ablations=not args.skip_column_ablations,
            after_seed=partial,
            scores_file=args.out / f"peer-{name}-scores.npz",  # for `python benchmarks/finance_peer.py A B`
        )
        tables.append(table(name, results[name]))
        print(tables[-1] + "\n", flush=True)
    (args.out / "peer.json").write_text(json.dumps(results, indent=2, default=float))
    (args.out / "peer.md").write_text("\n\n".join(tables) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/fedsite-finance-bench"))
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-threads", type=int, default=1)
    parser.add_argument("--score-threads", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--serve-seconds", type=float, default=20.0)
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end `score` runs (the median is reported)")
    parser.add_argument("--speed-only", action="store_true", help="reuse --out's data, model and quality")
    parser.add_argument("--peer", action="store_true", help="issue 15 item 3: fedsite vs the analyst's trees")
    parser.add_argument("--data", type=Path, help="--peer: an export to measure instead of the synthetic (a), (b)")
    parser.add_argument("--columns", default="", help="--peer: the column mapping of --data")
    parser.add_argument("--seeds", default="0", help="--peer: comma-separated training seeds")
    parser.add_argument("--skip-network", action="store_true", help="--peer: fedsite = its tree head alone")
    parser.add_argument("--scale", action="store_true", help="issue 15 item 4: train/score at scale, per stage")
    parser.add_argument("--rows", type=int, default=100_000, help="--scale: transactions in the synthetic export")
    parser.add_argument("--score-rows", type=int, default=200_000, help="--scale: rows `finance score` reads")
    parser.add_argument("--score-repeats", type=int, default=1, help="--scale: `score` runs (the median)")
    parser.add_argument("--tag", default="", help="--scale: suffix of the model directory and result file")
    parser.add_argument("--score-only", action="store_true", help="--scale: reuse the earlier run's model")
    parser.add_argument(
        "--set", action="append", default=[], help="--peer / --scale: a FinanceConfig key=value (repeatable)"
    )
    parser.add_argument("--skip-column-ablations", action="store_true", help="--peer: no rows without the columns")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)  # internal: the load generator process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        return _loadgen_main(args)
    from common.progress import set_quiet
    from data_adapters.synth.transactions import write

    set_quiet(True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.peer:
        return _peer_main(args)
    if args.scale:
        from benchmarks.finance_scale import main as scale_main

        return scale_main(args)
    data_csv = args.out / "data" / "transactions.csv"
    if args.speed_only:  # re-measure speed on the data and model of an earlier run in --out
        previous = json.loads((args.out / "results.json").read_text())
        results, timings = previous["quality"], previous["timings"]
    else:
        data_csv = write(args.out / "data", args.accounts, args.days, seed=args.seed)
        results, timings = _quality(args, data_csv, args.out)
    rates = _throughput(args, data_csv, args.out)
    serving = _serving(args, data_csv, args.out)
    table = _table(results, timings, rates, serving)
    print(table)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "quality": results, "timings": timings}
    summary.update(
        {"throughput": rates, "serving": serving, "targets": TARGETS, "vs_graph_baseline": _honest_ratios(results)}
    )
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    (args.out / "results.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

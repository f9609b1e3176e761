"""Flower ServerApp: the hub's loop over rounds, generic over the Task protocol.

Each round the hub sends the global model to every site, collects updates, aggregates those that
arrived (a site that errors or times out is recorded as failed and the round goes on while at least
`min_results` sites answered), asks every site to evaluate the new model, and checkpoints. At the end
it builds the cross-site matrix and writes history.json, global_model/ and report.md. The loop only
talks to a Flower `Grid`, so Flower's simulation engine, a real SuperLink and the in-process engine
(grid.py) all run the same code.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from common import config
from common.atomic import write_text
from common.device import seed_everything
from common.errors import UserError
from common.progress import log
from federation import checkpoint, codec, privacy, records, report, strategies
from federation.grid import exchange
from federation.moments import keep_statistics_pooled, moment_pairs, pooled_update
from federation.records import GlobalModel
from federation.settings import FederationSettings
from federation.sitework import load_task, model_config

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for `flwr run .` / the SuperLink: settings come from the run config."""
    run_config = dict(context.run_config)
    settings = FederationSettings.from_config(run_config)
    if settings.secagg:
        from federation.secagg import incompatibility

        s = settings
        if why := incompatibility(s.strategy, s.compression, s.fail_mode, s.fail_site, s.sites):
            raise ValueError(f"--secagg: {why}")
    if not settings.out_dir:
        settings = settings.replace(out_dir=str(Path.cwd() / f"fedsite-run-{context.run_id}"))
    if run_config.get("synthesize-sites") and not settings.data_root:
        # `flwr run .` on the local simulation: no site has data yet, so make each one its own
        from federation.partition import prepare_sites

        root = Path(settings.out_dir) / "data"
        scale = str(run_config.get("scale", "tiny"))
        suffix = prepare_sites(load_task(settings), root, settings.sites, seed=settings.seed, scale=scale)
        settings = settings.replace(data_root=str(root), source_suffix=suffix)
    run_federation(grid, settings)


def natural(name: str) -> tuple:
    """Sort key that puts site-2 before site-10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def wire_bytes(obj: Any) -> int:
    """Bytes of a Flower message as it travels: its own frame plus every record and array chunk in it."""
    children = obj.children or {}
    return len(obj.deflate()) + sum(wire_bytes(child) for child in children.values())


class SitesNotReady(UserError):
    """Fewer sites answered within `node_wait` than a round needs (slow start-up, busy machine).

    A UserError (exit 2 with one line), never an internal error: the simulation falls back to the
    in-process engine on it (sim.run), and a deployment's hub says which sites are missing."""


class Hub:
    """Sends instructions to the connected sites and gathers replies with their sizes."""

    def __init__(self, grid: Grid, settings: FederationSettings) -> None:
        self.grid = grid
        self.settings = settings
        self.nodes: dict[str, int] = {}

    def job(self, **extra: Any) -> ConfigRecord:
        values = self.settings.to_config()
        values.update(extra)
        return ConfigRecord(values)

    def connect(self) -> list[str]:
        """Wait for the sites, then ask each its name; returns the (at most `sites`) site names, sorted."""
        deadline = time.monotonic() + self.settings.node_wait
        while len(list(self.grid.get_node_ids())) < self.settings.sites and time.monotonic() < deadline:
            time.sleep(0.5)
        node_ids = sorted(self.grid.get_node_ids())
        messages = [Message(RecordDict({"job": self.job()}), dst_node_id=n, message_type="query") for n in node_ids]
        named: dict[str, int] = {}
        ids = list(self.grid.push_messages(messages))
        pending = {m.metadata.dst_node_id: i for m, i in zip(messages, ids)}
        deadline, shown = time.monotonic() + self.settings.node_wait, time.monotonic()
        while pending and time.monotonic() < deadline:  # sites may take a while to start: say so
            for reply in self.grid.pull_messages(list(pending.values())):
                pending.pop(reply.metadata.src_node_id, None)
                if not reply.has_error():
                    named[str(reply.content["site"]["name"])] = reply.metadata.src_node_id
            if len(named) >= self.settings.sites:
                break
            if time.monotonic() - shown >= 10:
                shown = time.monotonic()
                left = deadline - shown
                log(f"waiting for sites to start: {len(named)}/{self.settings.sites} ready ({left:.0f} s left)")
            time.sleep(0.2)
        # the first `sites` names: a simulation may start more nodes than the run has data for
        self.nodes = {name: named[name] for name in sorted(named, key=natural)[: self.settings.sites]}
        return list(self.nodes)

    def exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        return exchange(self.grid, messages, timeout)

    def send(self, kind: str, contents: dict[str, RecordDict], round_: int) -> dict[str, dict[str, Any]]:
        """Send one message per site; return {site: {"reply": Message | None, "error": str, bytes...}}.

        A failure is recorded as what happened (`failure_of`): the site's error with its message, the
        site offline (the SuperLink answers for a node that stopped its heartbeats, from its own node
        id, so replies are matched by the message they answer), or timed out after --round-timeout.
        """
        messages, by_node, results = [], {}, {}
        timeout = self.settings.round_timeout or None
        for site, content in contents.items():
            message = Message(content, dst_node_id=self.nodes[site], message_type=kind, group_id=str(round_))
            messages.append(message)
            by_node[self.nodes[site]] = site
            results[site] = {
                "reply": None,
                "error": f"timed out after {timeout:g} s" if timeout else "no reply",
                "bytes_received": wire_bytes(message),
                "bytes_sent": 0,
            }
        replies = self.exchange(messages, timeout)
        by_message = {m.metadata.message_id: by_node[m.metadata.dst_node_id] for m in messages}
        for reply in replies:
            site = by_node.get(reply.metadata.src_node_id) or by_message.get(reply.metadata.reply_to_message_id)
            if site is None:
                continue
            if reply.has_error():
                results[site]["error"] = failure_of(reply.error)
            else:
                results[site].update(reply=reply, error="", bytes_sent=wire_bytes(reply))
        return results


def failure_of(error: Any) -> str:
    """What a Flower error reply means for the run record: '<kind>: <detail>'."""
    from flwr.common.constant import ErrorCode

    reason = (error.reason or "").strip().splitlines()
    detail = (reason[-1] if reason else "")[:300]
    kinds = {
        ErrorCode.NODE_UNAVAILABLE: "offline",
        ErrorCode.CLIENT_APP_CRASHED: "crashed",
        ErrorCode.INVALID_FAB: "refused the app",
        ErrorCode.MESSAGE_UNAVAILABLE: "lost",
        ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "lost",
    }
    return f"{kinds.get(error.code, 'error')}: {detail or 'no message'}"


def _metrics(reply: Message | None, key: str = "metrics") -> dict[str, float]:
    return {k: float(v) for k, v in reply.content[key].items()} if reply is not None else {}


def weighted_metrics(per_site: dict[str, dict[str, float]]) -> dict[str, float]:
    """Example-weighted mean of the sites' metrics (the global view without pooling any data)."""
    rows = [m for m in per_site.values() if m]
    if not rows:
        return {}
    weights = np.array([m.get("num-examples", 1.0) for m in rows])
    keys = [k for k in rows[0] if k != "num-examples" and all(k in m for m in rows)]
    out = {k: float(np.average([m[k] for m in rows], weights=weights)) for k in keys}
    out["num-examples"] = float(weights.sum())
    return out


def evaluate_everywhere(
    hub: Hub, model: GlobalModel, split: str, round_: int, tests: dict | None = None, norm_round: int | None = None
) -> dict:
    """Each site's metrics of one model on its own `split` (the model travels, the data does not).

    With `tests` given, sites also score their test split in the same exchange (saves a round trip).
    `norm_round` (default `round_`): under local_norm, sites put their own normalisation of that
    round into the global model; -1 scores the model as sent (another site's local-only model).
    """
    wanted = f"{split}+test" if tests is not None and split != "test" else split
    job = hub.job(split=wanted, **{"norm-round": round_ if norm_round is None else norm_round})
    content = {s: RecordDict({"global": records.model_record(model), "job": job}) for s in hub.nodes}
    results = hub.send("evaluate", content, round_)
    if tests is not None:
        key = "metrics" if split == "test" else "test-metrics"
        tests.update({site: _metrics(r["reply"], key) for site, r in results.items()})
    return {site: _metrics(r["reply"]) for site, r in results.items()}


@dataclass(frozen=True)
class RunSetup:
    """What stays fixed over a run's rounds: the hub, the model's layout, the aggregation knobs and
    the (mean, spread) pairs of data statistics the model carries (moments.py)."""

    hub: Hub
    layout: codec.Layout
    params: strategies.StrategyParams
    moments: tuple = ()


@dataclass
class HubState:
    """What a round changes and a checkpoint keeps: the global model and the server optimizer's state."""

    model: GlobalModel
    opt_state: dict[str, np.ndarray] = field(default_factory=dict)


def run_round(run: RunSetup, state: HubState, round_: int, tests: dict | None = None) -> tuple[HubState, dict]:
    """One round: train everywhere, aggregate what arrived, evaluate; returns the new state and its record.

    With a mean-based rule, the data statistics the model carries (`run.moments`) are combined as the
    pooled data's statistics (moments.py) instead of averaged; robust rules leave them as they are.
    `tests`, in the last round: filled with each site's test metrics in the same exchange.
    """
    hub, s, layout = run.hub, run.hub.settings, run.layout
    vector = state.model.vector
    content = {
        site: RecordDict({"global": records.model_record(state.model), "job": hub.job(round=round_)})
        for site in hub.nodes
    }
    record: dict[str, Any] = {"round": round_, "sites": {}}
    updates, weights, new_ints = [], [], None
    if s.secagg:  # no single update reaches the hub, only their weighted mean (secagg.py)
        from dataclasses import replace

        from federation.secagg import secure_round

        record["sites"], updates, weights = secure_round(hub, round_, vector)
        run = replace(run, moments=())  # the sites' statistics are hidden too: averaged like the other weights
    results = {} if s.secagg else hub.send("train", content, round_)
    for site in sorted(results, key=natural):
        res = results[site]
        reply = res["reply"]
        entry = {
            "status": "ok" if reply is not None else "failed",
            "train": _metrics(reply),
            "eval": {},
            "bytes_sent": res["bytes_sent"],
            "bytes_received": res["bytes_received"],
        }
        if reply is None:
            entry["error"] = res["error"]
            log(f"round {round_}: {site} failed ({res['error']})")
        else:
            arrays, site_ints = records.from_record(reply.content["update"])
            entry["payload_bytes"] = codec.payload_bytes(arrays)
            entry["payload_deflated_bytes"] = codec.deflated_bytes(arrays)
            updates.append(codec.decode(arrays, layout.size, layout.int8_chunks, layout.exact))
            weights.append(entry["train"].get("num-examples", 1.0))
            new_ints = new_ints if new_ints is not None else site_ints
        record["sites"][site] = entry
    record["aggregated"] = len(updates) >= max(1, s.min_results)
    if record["aggregated"]:
        stacked = np.stack(updates)
        update = strategies.aggregate(s.strategy, stacked, np.array(weights), run.params)
        if s.strategy in strategies.MEAN_BASED:
            update = pooled_update(update, vector, stacked, np.array(weights), list(run.moments))
        new, opt_state = strategies.apply_update(s.strategy, vector, update, state.opt_state, run.params)
        model = GlobalModel(keep_statistics_pooled(new, vector + update, list(run.moments)), state.model.ints)
        state = HubState(model.with_ints(new_ints or {}), opt_state)
    else:
        log(f"round {round_}: only {len(updates)} result(s) < min_results={s.min_results}; global model unchanged")
    scored = round_ % max(s.eval_every, 1) == 0 or round_ == s.rounds
    per_site = evaluate_everywhere(hub, state.model, s.eval_split, round_, tests) if scored else {}
    for site, metrics in per_site.items():
        record["sites"].setdefault(site, {"status": "failed", "train": {}, "bytes_sent": 0, "bytes_received": 0})
        record["sites"][site]["eval"] = metrics
    record["global_eval"] = weighted_metrics(per_site)
    return state, record


def cross_site(hub: Hub, final: GlobalModel, initial: GlobalModel, round_: int, tests: dict) -> dict:
    """Each site's test data against the global model and against every site's local-only model."""
    matrix = {"global": tests or evaluate_everywhere(hub, final, "test", round_)}
    if not hub.settings.cross_site:
        return matrix
    content = {s: RecordDict({"global": records.model_record(initial), "job": hub.job()}) for s in hub.nodes}
    for site, res in sorted(hub.send("train.local", content, round_ + 1).items()):
        if res["reply"] is None:
            log(f"cross-site: {site} could not train a local model ({res['error']})")
            continue
        sent = records.read_model(res["reply"].content["model"])
        local_model = GlobalModel(sent.vector, final.ints).with_ints(sent.ints)
        matrix[f"local:{site}"] = evaluate_everywhere(hub, local_model, "test", round_ + 2, norm_round=-1)
    return matrix


def agree_with_sites(hub: Hub, task: Any, cfg: Any, out: Path) -> Any:
    """Before round 1: every site describes its data (Task.describe_data, computed at the site:
    names, types and counts cross the wire, never a row), and the hub agrees on the config every
    site will use (Task.agree_config; finance: the shared extra columns, or a refusal). The report
    goes to OUT/columns.json. A site that cannot describe its data stops the run with its reason:
    a config agreed without it would not fit its data."""
    content = {site: RecordDict({"job": hub.job()}) for site in hub.nodes}
    results = hub.send("query.describe", content, 0)
    descriptions = {}
    for site in sorted(results, key=natural):
        reply = results[site]["reply"]
        if reply is None:
            raise UserError(f"{site}: could not describe its data before round 1 ({results[site]['error']})")
        descriptions[site] = json.loads(str(reply.content["description"]["json"]))
    cfg, agreed = task.agree_config(cfg, descriptions)
    if agreed:
        write_text(out / "columns.json", json.dumps(agreed, indent=2) + "\n")
        dropped = {site: cols for site, cols in agreed.get("dropped", {}).items() if cols}
        note = f"; dropped {dropped}" if dropped else ""
        log(f"sites agreed on their data: {len(agreed.get('shared', []))} shared column(s){note}")
    return cfg


def run_federation(grid: Grid, settings: FederationSettings) -> dict[str, Any]:
    """The whole run: rounds with checkpoints, cross-site matrix, outputs. Returns the history."""
    out = Path(settings.out_dir)
    task = load_task(settings)
    hub = Hub(grid, settings)
    sites = hub.connect()
    log(f"{len(hub.nodes)} site(s) connected: {', '.join(sites)}")
    if len(hub.nodes) < max(1, settings.min_results):
        raise SitesNotReady(
            f"only {len(hub.nodes)} of {settings.sites} site(s) started within {settings.node_wait:.0f} s "
            f"(min_results={settings.min_results})"
        )
    cfg = model_config(task, settings)
    if task.agrees_on_data:  # e.g. finance: the extra columns every bank has, from the sites' own summaries
        cfg = agree_with_sites(hub, task, cfg, out)
        settings = hub.settings = settings.replace(config_toml=config.to_toml(cfg))
    seed_everything(settings.seed)
    model = task.build_model(cfg)
    layout = codec.model_layout(model)
    state = HubState(GlobalModel.of(model, layout))
    initial = state.model.copy()
    history = report.new_history(settings)
    start = 1
    if settings.resume and (saved := checkpoint.load(out)) is not None:
        state, history = HubState(saved["model"], saved["opt_state"]), saved["history"]
        start = saved["round"] + 1
        log(f"resuming after round {saved['round']} from {out / 'checkpoints'}")
    run = RunSetup(hub, layout, strategies.StrategyParams.of(settings), tuple(moment_pairs(model, layout, task)))
    history["sites"] = sites
    if settings.secagg:
        from federation.secagg import describe

        history["secure_aggregation"] = describe(len(hub.nodes))
    began = time.perf_counter()
    tests: dict[str, dict[str, float]] = {}
    for round_ in range(start, settings.rounds + 1):
        round_began = time.perf_counter()
        state, record = run_round(run, state, round_, tests if round_ == settings.rounds else None)
        record["seconds"] = time.perf_counter() - round_began
        history["rounds"].append(record)
        checkpoint.save(out, round_, state.model, state.opt_state, history)
        headline = record["global_eval"].get(task.headline_metric)
        ok = sum(e["status"] == "ok" for e in record["sites"].values())
        shown = f"{headline:.4f}" if headline is not None else "n/a"
        log(f"round {round_}/{settings.rounds}: {ok}/{len(record['sites'])} sites ok, {task.headline_metric}={shown}")
    history["cross_site"] = cross_site(hub, state.model, initial, settings.rounds + 1, tests)
    history["privacy"] = privacy.privacy_report(settings.clip, settings.noise, settings.rounds, settings.delta)
    history["compression"] = report.compression_summary(
        history, settings.compression, layout.size, len(layout.int8_chunks), len(layout.exact)
    )
    history["seconds"] = time.perf_counter() - began
    state.model.load_into(model, layout)
    report.write_outputs(out, settings, history, model, cfg, task)
    return history

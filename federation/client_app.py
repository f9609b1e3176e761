"""Flower ClientApp: a thin adapter from Flower messages to a site's work (federation/sitework.py).

Registered in pyproject's `[tool.flwr.app.components]`, so the same app runs in Flower's
simulation engine and on a real SuperNode. Where the data is comes from the node, never the hub:
`data-dir` (and optionally `site-name`, `state-dir`) in the SuperNode's `--node-config`; in
simulation, `partition-id` picks DATA_ROOT/site-<k>.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.secagg import optional_secaggplus_mod
from federation.settings import FederationSettings, site_name

if TYPE_CHECKING:
    from federation.sitework import SiteWorker

# torch and the Task are imported by the handlers that train or evaluate, not here: a real SuperNode
# starts a fresh process per message, and the handshake and three of SecAgg+'s four exchanges per
# round need neither (the import is 2-4 s of each such process on a busy machine)
app = ClientApp(mods=[optional_secaggplus_mod])  # SecAgg+ only for rounds the hub runs securely
# one worker per site of the current run: a process that serves several simulated sites (the
# in-process engine, a Ray worker) keeps each site's model and data between rounds
_workers: dict[tuple, SiteWorker] = {}


def site_of(context: Context) -> str:
    """The site's name: from the node config, else from the simulation partition."""
    node = context.node_config
    if "site-name" in node:
        return str(node["site-name"])
    if "partition-id" in node:
        return site_name(int(node["partition-id"]))
    return f"node-{context.node_id}"


def run_key(settings: FederationSettings) -> str:
    """A directory name for one run's state at a site: the same for the hub's `--resume` of that run
    (same out dir, vertical and seed), another for any other run, so no run reads another's state."""
    ident = f"{settings.out_dir}|{settings.vertical}|{settings.task_module}|{settings.seed}"
    return "run-" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def paths_of(context: Context, settings: FederationSettings, site: str) -> tuple[Path, Path]:
    """(data directory, state directory) of this site.

    A real site (node config `data-dir`) keeps its state under its own `state-dir` (or beside its
    data), never under the hub's out dir: the hub's paths are the hub machine's. Simulations, where
    hub and sites share a machine, keep the sites' state in OUT/site_state/SITE.
    """
    node = context.node_config
    if "data-dir" in node:
        data = Path(str(node["data-dir"]))
    elif settings.data_root:
        data = Path(settings.data_root) / site / settings.source_suffix
    else:
        raise ValueError(f"{site}: no data directory (set node config data-dir)")
    if "state-dir" in node:
        state = Path(str(node["state-dir"])) / site / run_key(settings)
    elif "data-dir" in node or not settings.out_dir:
        state = data.parent / f".fedsite-state-{site}" / run_key(settings)
    else:
        state = Path(settings.out_dir) / "site_state" / site
    return data, state


def worker_for(message: Message, context: Context) -> tuple[SiteWorker, dict[str, Any]]:
    """The (cached) worker for this run and site, and the instruction's job config."""
    from federation.sitework import SiteWorker

    job = dict(message.content["job"])
    settings = FederationSettings.from_config(job)
    site = site_of(context)
    data, state = paths_of(context, settings, site)
    run = (context.run_id, settings.config_toml, settings.task_module, settings.vertical, settings.seed,
           settings.data_root, settings.out_dir)  # fmt: skip
    key = (run, site, str(data), str(state))
    if key not in _workers:
        if any(k[0] != run for k in _workers):  # a new run: drop the last run's workers (and their data)
            _workers.clear()
        _workers[key] = SiteWorker(settings, site, data, state)
    worker = _workers[key]
    worker.settings = settings
    return worker, job


@app.query()
def hello(message: Message, context: Context) -> Message:
    """Handshake: the site tells the hub the name it goes by (nothing else)."""
    return Message(RecordDict({"site": ConfigRecord({"name": site_of(context)})}), reply_to=message)


@app.query("describe")
def describe(message: Message, context: Context) -> Message:
    """Before round 1, for Tasks that agree on their data (finance's extra columns): this site's
    description of its data. Only names, types and counts leave the site (Task.describe_data), never
    a row: the raw data stays here."""
    import json

    from federation.sitework import describe_site

    settings = FederationSettings.from_config(dict(message.content["job"]))
    site = site_of(context)
    data, _ = paths_of(context, settings, site)
    text = json.dumps(describe_site(settings, data))
    return Message(RecordDict({"description": ConfigRecord({"json": text})}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """One federated round: train from the global model, send back the (privatised, encoded) update."""
    from federation.records import read_model, to_record

    worker, job = worker_for(message, context)
    arrays, metrics = worker.train(int(job["round"]), read_model(message.content["global"]))
    content = RecordDict({"update": to_record(arrays), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=message)


@app.train("local")
def train_local(message: Message, context: Context) -> Message:
    """A local-only model for the cross-site matrix (same start and epochs as the federation)."""
    from federation.records import read_model, to_record

    worker, _ = worker_for(message, context)
    arrays, metrics = worker.train_local(read_model(message.content["global"]))
    return Message(RecordDict({"model": to_record(arrays), "metrics": MetricRecord(metrics)}), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Metrics of the sent model on this site's validation or test split."""
    from federation.records import read_model

    worker, job = worker_for(message, context)
    model = read_model(message.content["global"])
    splits = str(job.get("split", "val")).split("+")
    norm = int(job.get("norm-round", -1))  # local_norm: the site's own normalisation of that round
    content = RecordDict({"metrics": MetricRecord(worker.evaluate(model, splits[0], norm))})
    if "test" in splits[1:]:
        content["test-metrics"] = MetricRecord(worker.evaluate(model, "test", norm))
    return Message(content, reply_to=message)

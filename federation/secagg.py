"""Secure aggregation (`--secagg`): the hub learns only the example-weighted mean of the sites' updates.

Flower 1.41 implements SecAgg+ (Bell et al., CCS 2020) as `SecAggPlusWorkflow` (hub) and
`secaggplus_mod` (sites), written for its legacy strategy API: four `train` exchanges per round
(key setup, encrypted key shares, masked updates, unmasking), with the update travelling as legacy
FitIns/FitRes records. This module runs that workflow from our Message-API loop for the training
exchange of a round and adapts our ClientApp to it at the site:

- the hub (`secure_train`) hands the workflow a minimal legacy strategy that asks every connected
  site and keeps the unmasked aggregate; it never holds a single site's update, only masked vectors
  (each site adds pairwise masks and a private mask, modulo 2^32) and their sum;
- a site (`optional_secaggplus_mod`, a ClientApp mod) runs the protocol around our own `train`
  handler, which sees the usual `global`/`job` records and replies as always; the mod quantizes,
  weights and masks the reply's update before it leaves.

A site dropping out after the key exchange (e.g. failing during training) is tolerated: the others'
key shares let the hub remove its masks, as long as at least `threshold` sites remain.

Compatible: FedAvg, FedProx, FedAvgM, FedAdam (they need only the mean update), site-level DP
(`--clip/--noise`: noise is added at the site before masking), `--local-norm`, `--fresh-optimizer`.
Refused: the robust rules (median, trimmed-mean, Krum need every single update), int8/top-k
compression (codes and their scales cannot be summed under masks; SecAgg+ quantizes itself), and the
fault drill's hang mode. With secure aggregation the hub cannot pool data statistics by the law of
total variance (that needs each site's statistics): they are averaged like every other weight.
Integer buffers (BatchNorm counters) stay at the hub's values. A site's update u is weighted by
r = examples / MAX_WEIGHT, clipped to [-CLIPPING_RANGE, CLIPPING_RANGE] per weight and rounded
stochastically to one of QUANTIZATION_LEVELS levels over that range; `error_bound` says what that
costs in precision.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

SECURE_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam")
# Flower's defaults, passed explicitly so the precision they give is stated in one place
CLIPPING_RANGE = 8.0
QUANTIZATION_LEVELS = 2**22
MAX_WEIGHT = 1000.0
# Flower takes an integer num_shares only above 2, so "every site shares its keys with every other
# site" is the fraction 1.0 (the workflow turns it into the number of sites, 2 included)
EVERY_SITE = 1.0


def threshold(sites: int) -> int:
    """Key shares needed to unmask: all but one site's (one dropout survived), never fewer than 2.

    With 2 sites that is both: a dropout cannot be survived there, since unmasking the one
    remaining site's update would hand it to the hub in the clear."""
    return max(2, sites - 1)


def error_bound(examples: list[float]) -> float:
    """The largest per-weight difference between one round's SecAgg+ aggregate and the exact
    example-weighted mean of the same updates (none clipped), for sites with these example counts.

    Site k sends r_k * u_k (r_k = n_k / MAX_WEIGHT, itself rounded to a multiple of 1/L) rounded
    stochastically to one of L = QUANTIZATION_LEVELS levels over [-c, c]: an error below one level,
    2c / L, per weight. The hub divides the sum of those by sum(r_k), so the K sites' errors add up
    to less than K * (2c / L) / sum(r_k). Small sites pay for MAX_WEIGHT: with 96 examples each,
    r_k is about 0.1 and the bound is ten levels, 4e-5. (Rounding the r_k themselves cancels when
    the sites are of equal size and moves the weights by less than 1 / (2 L r_k) otherwise.)
    """
    level = 2 * CLIPPING_RANGE / QUANTIZATION_LEVELS
    ratios = [round(n / MAX_WEIGHT * QUANTIZATION_LEVELS) / QUANTIZATION_LEVELS for n in examples]
    return len(examples) * level / sum(ratios)


def describe(sites: int) -> dict[str, Any]:
    """What a run's history records about its secure aggregation."""
    return {
        "protocol": "SecAgg+ (Flower SecAggPlusWorkflow / secaggplus_mod)", "key_shares": sites,
        "threshold": threshold(sites), "clipping_range": CLIPPING_RANGE,
        "quantization_levels": QUANTIZATION_LEVELS, "max_weight": MAX_WEIGHT,
    }  # fmt: skip


def incompatibility(
    strategy: str, compression: str, fail_mode: str = "error", fail_site: int = -1, sites: int = 2
) -> str | None:
    """Why these settings cannot run with secure aggregation (None when they can)."""
    if sites < 2:
        return f"--sites {sites}: secure aggregation needs at least 2 sites (one site's mean is its own update)"
    if strategy not in SECURE_STRATEGIES:
        return (
            f"--strategy {strategy} needs every site's own update, which secure aggregation hides "
            f"(with --secagg use {', '.join(SECURE_STRATEGIES)})"
        )
    if compression != "none":
        return f"--compression {compression}: encoded updates cannot be summed under masks (SecAgg+ quantizes itself)"
    if fail_site >= 0 and fail_mode == "hang":
        return "--fail-mode hang: a hung site stalls the secure-aggregation exchange (use --fail-mode error)"
    return None


# ---------------------------------------------------------------- site side


def optional_secaggplus_mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Flower's `secaggplus_mod` for the `train` messages of a secure round, nothing otherwise."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if msg.metadata.message_type != "train" or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)
    return secaggplus_mod(msg, ctxt, lambda m, c: _train_as_legacy(m, c, call_next))


def _train_as_legacy(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Our `train` handler behind the legacy FitIns/FitRes records the SecAgg+ mod speaks."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    msg.content["global"] = ArrayRecord({"vector": Array(parameters_to_ndarrays(fitins.parameters)[0])})
    msg.content["job"] = ConfigRecord(dict(fitins.config))
    reply = call_next(msg, ctxt)
    update = reply.content["update"]["delta"].numpy()  # compression is "none" under --secagg
    metrics = {k: float(v) for k, v in reply.content["metrics"].items()}
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters([np.asarray(update, dtype=np.float64)]),
        num_examples=max(1, int(metrics.get("num-examples", 1))),
        metrics=metrics,
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


# ---------------------------------------------------------------- hub side


def _relay_strategy(node_ids: list[int], grid: Any, job: dict[str, Any]):
    """A legacy Strategy that asks every given node and keeps the workflow's unmasked aggregate."""
    from flwr.common import FitIns, parameters_to_ndarrays
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import Strategy

    class Relay(Strategy):
        def __init__(self) -> None:
            self.aggregate: np.ndarray | None = None
            self.results: list = []

        def initialize_parameters(self, client_manager):
            return None

        def configure_fit(self, server_round, parameters, client_manager):
            fitins = FitIns(parameters, dict(job))
            return [(GridClientProxy(nid, grid, 0), fitins) for nid in node_ids]

        def aggregate_fit(self, server_round, results, failures):
            self.results = list(results)
            if results:
                self.aggregate = parameters_to_ndarrays(results[0][1].parameters)[0]
            return (results[0][1].parameters if results else None), {}

        def configure_evaluate(self, server_round, parameters, client_manager):
            return []

        def aggregate_evaluate(self, server_round, results, failures):
            return None, {}

        def evaluate(self, server_round, parameters):
            return None

    return Relay()


def secure_train(
    grid: Any, nodes: dict[str, int], vector: np.ndarray, job: dict[str, Any], round_: int, timeout: float | None
) -> tuple[np.ndarray | None, dict[str, dict[str, Any]]]:
    """One round's training exchange under SecAgg+: (the weighted mean update or None, per-site results).

    Per-site results carry the site's scalar metrics (they travel in the clear, as without
    --secagg) and the bytes each site sent and received over the protocol's four exchanges.
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    counting = CountingGrid(grid)
    strategy = _relay_strategy(sorted(nodes.values()), counting, job)
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=round_),
        strategy=strategy,
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: round_})
    params = ndarrays_to_parameters([np.asarray(vector, dtype=np.float32)])
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, keep_input=True)
    workflow = SecAggPlusWorkflow(
        num_shares=EVERY_SITE, reconstruction_threshold=threshold(len(nodes)), max_weight=MAX_WEIGHT,
        clipping_range=CLIPPING_RANGE, quantization_range=QUANTIZATION_LEVELS, timeout=timeout,
    )  # fmt: skip
    workflow(counting, context)
    by_node = {nid: site for site, nid in nodes.items()}
    results = {
        site: {"reply": None, "metrics": {}, "error": "dropped out of secure aggregation",
               "bytes_sent": counting.sent.get(nid, 0), "bytes_received": counting.received.get(nid, 0)}
        for site, nid in nodes.items()
    }  # fmt: skip
    for proxy, fitres in strategy.results:
        site = by_node[proxy.node_id]
        results[site].update(error="", metrics={k: float(v) for k, v in fitres.metrics.items()})
    for site, error in counting.errors.items():
        if results[by_node[site]]["error"]:
            results[by_node[site]]["error"] = error
    aggregate = None if strategy.aggregate is None else np.asarray(strategy.aggregate, dtype=np.float32)
    return aggregate, results


class CountingGrid:
    """A Grid wrapper that counts each node's bytes both ways and keeps each node's last error."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.errors: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        from federation.grid import exchange
        from federation.server_app import failure_of, wire_bytes

        # each message gets a content of its own: the workflow shares one RecordDict among a stage's
        # messages and the mod edits what it receives (harmless over a network, not in one process)
        messages = [
            Message(copy.deepcopy(m.content), dst_node_id=m.metadata.dst_node_id,
                    message_type=m.metadata.message_type, group_id=m.metadata.group_id)
            for m in messages
        ]  # fmt: skip
        dst = {}
        for message in messages:
            nid = message.metadata.dst_node_id
            self.received[nid] = self.received.get(nid, 0) + wire_bytes(message)
        replies = exchange(self.grid, messages, timeout)  # Flower's own send_and_receive polls every 3 s
        for message in messages:
            dst[message.metadata.message_id] = message.metadata.dst_node_id
        for reply in replies:
            answered = reply.metadata.reply_to_message_id  # "" where a grid sets no ids (in-process)
            nid = dst[answered] if answered in dst and answered else reply.metadata.src_node_id
            if reply.has_error():
                self.errors[nid] = failure_of(reply.error)
            else:
                self.sent[nid] = self.sent.get(nid, 0) + wire_bytes(reply)
        return replies


def secure_round(hub: Any, round_: int, vector: np.ndarray) -> tuple[dict[str, dict], list[np.ndarray], list[float]]:
    """The training part of a round under SecAgg+, as the hub's loop records it: (per-site entries,
    the mean update once per site that contributed (so --min-results counts sites), unit weights)."""
    from common.progress import log
    from federation.server_app import natural

    job = dict(hub.job(round=round_))
    mean, results = secure_train(hub.grid, hub.nodes, vector, job, round_, hub.settings.round_timeout or None)
    entries, contributed = {}, 0
    for site in sorted(results, key=natural):
        res = results[site]
        entry = {"status": "failed" if res["error"] else "ok", "train": res["metrics"], "eval": {},
                 "bytes_sent": res["bytes_sent"], "bytes_received": res["bytes_received"]}  # fmt: skip
        if res["error"]:
            entry["error"] = res["error"]
            log(f"round {round_}: {site} failed ({res['error']})")
        else:
            contributed += 1
        entries[site] = entry
    if mean is None:
        return entries, [], []
    return entries, [mean] * contributed, [1.0] * contributed

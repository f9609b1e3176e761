"""Aggregation rules, update codecs and the DP accountant on their own (no Flower, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from federation import codec, privacy, strategies
from federation.settings import FederationSettings


def test_robust_rules_resist_one_wild_site():
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 0.01, size=(4, 50)).astype(np.float32) + 1.0
    wild = np.full((1, 50), 1000.0, dtype=np.float32)
    updates = np.concatenate([honest, wild])
    weights = np.ones(5)
    params = strategies.StrategyParams(trim_fraction=0.2, krum_byzantine=1)
    mean = strategies.aggregate("fedavg", updates, weights, params)
    assert mean.mean() > 100  # the plain mean is dragged away
    for rule in ("median", "trimmed-mean", "krum"):
        robust = strategies.aggregate(rule, updates, weights, params)
        assert np.abs(robust - 1.0).max() < 0.1, rule
    assert strategies.krum_index(updates, 1) != 4


def test_fedavg_weights_by_examples_and_fedadam_moves_towards_update():
    updates = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    avg = strategies.weighted_mean(updates, np.array([3.0, 1.0]))
    np.testing.assert_allclose(avg, [0.75, 0.25])
    params = strategies.StrategyParams(server_lr=0.1)
    new, state = strategies.apply_update("fedadam", np.zeros(2, np.float32), avg, {}, params)
    assert (new > 0).all() and set(state) == {"m", "v"}
    again, _ = strategies.apply_update("fedadam", new, avg, state, params)
    assert (again > new).all()
    # FedAvgM: the first round is FedAvg's step, then the momentum carries past it
    first, state = strategies.apply_update("fedavgm", np.zeros(2, np.float32), avg, {}, params)
    np.testing.assert_allclose(first, avg)
    second, _ = strategies.apply_update("fedavgm", first, avg, state, params)
    np.testing.assert_allclose(second - first, avg * (1 + params.server_momentum), rtol=1e-6)


def test_int8_roundtrip_is_close_and_four_times_smaller():
    vector = np.random.default_rng(1).normal(0, 0.05, 100_000).astype(np.float32)
    arrays = codec.encode(vector, "int8")
    decoded = codec.decode(arrays, len(vector))
    assert np.abs(decoded - vector).max() <= np.abs(vector).max() / 127 + 1e-7
    assert vector.nbytes / codec.payload_bytes(arrays) >= 3.9


def test_topk_error_feedback_delivers_what_was_held_back():
    rng = np.random.default_rng(2)
    residual, sent_total, true_total = None, np.zeros(1000, np.float32), np.zeros(1000, np.float32)
    for _ in range(30):
        update = rng.normal(0, 1, 1000).astype(np.float32)
        arrays, residual = codec.encode_with_feedback(update, "topk", residual, topk_fraction=0.1)
        assert len(arrays["idx"]) == 100
        sent_total += codec.decode(arrays, 1000)
        true_total += update
    # without feedback 90% of every update would be lost; with it only the current residual is pending
    np.testing.assert_allclose(sent_total + residual, true_total, rtol=1e-4, atol=1e-3)
    assert np.linalg.norm(residual) < 0.5 * np.linalg.norm(true_total)


def test_layout_roundtrip_keeps_shapes_and_skips_integer_buffers():
    import torch

    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.BatchNorm1d(4))
    state = model.state_dict()
    layout = codec.layout_of(state)
    assert "1.num_batches_tracked" not in layout.names
    back = codec.unflatten(codec.flatten(state, layout), layout)
    for name in layout.names:
        assert torch.equal(back[name], state[name])
    assert set(codec.integer_entries(state)) == {"1.num_batches_tracked"}


def test_clipping_bounds_the_norm_and_noise_is_seeded():
    vector = np.full(100, 1.0, np.float32)
    clipped, norm = privacy.clip_update(vector, 2.0)
    assert norm == pytest.approx(10.0) and np.linalg.norm(clipped) == pytest.approx(2.0, rel=1e-5)
    a, _ = privacy.privatize(vector, 2.0, 1.0, seed=7)
    b, _ = privacy.privatize(vector, 2.0, 1.0, seed=7)
    c, _ = privacy.privatize(vector, 2.0, 1.0, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.std(a - clipped) == pytest.approx(2.0, rel=0.3)


def test_accountant_matches_google_dp_accounting_and_grows_with_rounds():
    dp_accounting = pytest.importorskip("dp_accounting")
    for noise, rounds in ((1.0, 1), (1.1, 10), (4.0, 50)):
        accountant = dp_accounting.rdp.RdpAccountant()
        accountant.compose(dp_accounting.GaussianDpEvent(noise), rounds)
        theirs = accountant.get_epsilon(1e-5)
        ours = privacy.gaussian_epsilon(noise, rounds, 1e-5)
        assert ours == pytest.approx(theirs, rel=0.03), (noise, rounds)
    assert privacy.gaussian_epsilon(1.0, 20, 1e-5) > privacy.gaussian_epsilon(1.0, 5, 1e-5)
    assert privacy.privacy_report(0.0, 1.0, 5, 1e-5) == {"epsilon": None, "delta": None}


def test_settings_survive_a_config_record_roundtrip():
    settings = FederationSettings(vertical="finance", sites=4, clip=1.5, cross_site=False, compression="int8")
    assert FederationSettings.from_config(settings.to_config()) == settings
    assert FederationSettings.from_config({"num-server-rounds": 7, "cross-site": "false"}).rounds == 7


def test_dirichlet_partition_covers_every_example_once_and_skews_labels():
    from federation.partition import dirichlet_partition

    labels = np.repeat(np.arange(4), 250)
    parts = dirichlet_partition(labels, 5, alpha=0.1, seed=0)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(1000)) and all(len(p) > 0 for p in parts)
    shares = np.array([[np.mean(labels[p] == c) for c in range(4)] for p in parts])
    assert shares.max(axis=1).mean() > 0.6  # small alpha: most sites are dominated by one label
    again = dirichlet_partition(labels, 5, alpha=0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_sites_sort_naturally():
    from federation.server_app import natural

    assert sorted(["site-10", "site-2", "site-1"], key=natural) == ["site-1", "site-2", "site-10"]


def _reply_bytes(arrays, n_metrics=7):
    """Serialized size of a site's train reply carrying `arrays` (as the hub counts it)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from federation.server_app import wire_bytes

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    instruction = Message(RecordDict({"job": ConfigRecord({"round": 1})}), dst_node_id=5, message_type="train")
    instruction.metadata.__dict__["_message_id"] = "m1"
    metrics = MetricRecord({f"metric-{i}": float(i) for i in range(n_metrics)})
    update = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
    return wire_bytes(Message(RecordDict({"update": update, "metrics": metrics}), reply_to=instruction))


def test_int8_codes_are_deflated_losslessly_and_a_small_model_reply_shrinks_3_9x():
    # a finance-sized update (17,760 weights): tensors of different scales share a chunk, as in a model
    rng = np.random.default_rng(3)
    vector = np.concatenate([rng.normal(0, s, n) for s, n in ((0.05, 2000), (0.005, 12000), (0.0005, 3760))])
    vector = vector.astype(np.float32)
    arrays = codec.encode(vector, "int8")
    assert set(arrays) == {"q8z"} and arrays["q8z"].dtype == np.uint8
    decoded = codec.decode(arrays, len(vector))
    # exactly what the undeflated codes give: the deflate is lossless
    n_scales = -(-len(vector) // codec.INT8_CHUNK)
    scales = arrays["q8z"][: 4 * n_scales].view("<f4")
    padded = np.zeros(n_scales * codec.INT8_CHUNK, np.float32)
    padded[: len(vector)] = vector
    codes = np.clip(np.rint(padded.reshape(n_scales, -1) / scales[:, None]), -127, 127).reshape(-1)[: len(vector)]
    np.testing.assert_array_equal(decoded, codes * np.repeat(scales, codec.INT8_CHUNK)[: len(vector)])
    assert codec.payload_bytes(arrays) < codec.int8_raw_bytes(len(vector))
    dense = _reply_bytes(codec.encode(vector, "none"))
    assert dense / _reply_bytes(arrays) >= 3.9


def test_int8_codes_that_do_not_deflate_travel_raw():
    vector = np.random.default_rng(4).uniform(-1, 1, 10_000).astype(np.float32)  # codes spread over all 255 values
    arrays = codec.encode(vector, "int8")
    assert set(arrays) == {"q8"} and codec.payload_bytes(arrays) == codec.int8_raw_bytes(len(vector))
    assert np.abs(codec.decode(arrays, len(vector)) - vector).max() <= 1 / 127 + 1e-6


def test_each_round_trains_with_its_own_seed_and_post_stages_wait_for_the_last():
    from dataclasses import dataclass

    from federation.sitework import SiteWorker

    @dataclass(frozen=True)
    class Seeded:
        seed: int = 0
        lr: float = 0.1
        post_stage: bool = True

    worker = SiteWorker.__new__(SiteWorker)
    settings = FederationSettings(seed=1, rounds=3, final_round_only=("post_stage", "not_a_key"))
    worker.settings, worker.site, worker.cfg = settings, "site-0", Seeded()
    seeds = {worker.round_config(r).seed for r in (1, 2, 3)}
    assert len(seeds) == 3 and worker.round_config(2).lr == 0.1
    assert worker.round_config(2) == worker.round_config(2)  # repeatable (resume replays it)
    # the post-hoc stage is fitted in the last round only (and in the local-only model's single fit)
    assert [worker.round_config(r).post_stage for r in (0, 1, 2, 3)] == [True, False, False, True]
    worker.cfg = ("no", "fields")
    assert worker.round_config(2) is worker.cfg


def test_data_statistics_aggregate_as_the_pooled_data_would():
    """A (mean, std) buffer pair and BatchNorm's (mean, var) combine by the law of total variance,
    so sites with different means give the pooled spread, not the (smaller) mean of their spreads."""
    import torch
    from torch import nn

    from common.task import Task
    from federation.moments import keep_statistics_pooled, moment_names, moment_pairs, pooled_update

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)
            self.register_buffer("mean", torch.zeros(1, 2, 1, 1))
            self.register_buffer("std", torch.ones(1, 2, 1, 1))

    class Declaring(Task):  # the model's own input statistics, declared as the verticals' Tasks do
        def federated_moments(self, model):
            return [*super().federated_moments(model), ("mean", "std", "std")]

    model = Net()
    assert moment_names(model) == [("bn.running_mean", "bn.running_var", "var")]  # a Task's default
    assert set(moment_names(model, Declaring())) == {
        ("bn.running_mean", "bn.running_var", "var"),
        ("mean", "std", "std"),
    }
    layout = codec.layout_of(model.state_dict())
    pairs = moment_pairs(model, layout, Declaring())
    rng = np.random.default_rng(0)
    sizes = [300, 100]
    data = [rng.normal(loc, scale, size=(n, 2)) for n, loc, scale in zip(sizes, (-2.0, 3.0), (0.5, 1.5))]
    global_vec = codec.flatten(model.state_dict(), layout)
    updates = []
    for x in data:
        site = Net()
        site.load_state_dict(model.state_dict())
        site.conv.weight.data += 0.1
        site.mean.copy_(torch.tensor(x.mean(0), dtype=torch.float32).view(1, 2, 1, 1))
        site.std.copy_(torch.tensor(x.std(0), dtype=torch.float32).view(1, 2, 1, 1))
        site.bn.running_mean.copy_(torch.tensor(x.mean(0)))
        site.bn.running_var.copy_(torch.tensor(x.var(0)))
        updates.append(codec.flatten(site.state_dict(), layout) - global_vec)
    updates = np.stack(updates)
    plain = strategies.weighted_mean(updates, np.array(sizes, float))
    update = pooled_update(plain, global_vec, updates, np.array(sizes, float), pairs)
    state = codec.unflatten(global_vec + update, layout)
    pooled = np.concatenate(data)
    np.testing.assert_allclose(state["mean"].view(-1), pooled.mean(0), rtol=1e-5)
    np.testing.assert_allclose(state["std"].view(-1), pooled.std(0), rtol=1e-5)
    np.testing.assert_allclose(state["bn.running_var"], pooled.var(0), rtol=1e-5)
    averaged_std = codec.unflatten(global_vec + plain, layout)["std"].view(-1).numpy()
    assert (averaged_std < 0.5 * pooled.std(0)).all()  # what plain FedAvg would have kept
    np.testing.assert_allclose(
        update[~np.isin(np.arange(len(update)), _spread_indices(pairs))],
        plain[~np.isin(np.arange(len(update)), _spread_indices(pairs))],
    )  # weights and means: FedAvg's
    # after a server momentum step the statistics stay the pooled ones; the weights take the step
    stepped = keep_statistics_pooled(global_vec + 3 * update, global_vec + update, pairs)
    spread = _spread_indices(pairs)
    np.testing.assert_allclose(stepped[spread], (global_vec + update)[spread])
    weights_only = np.ones(len(update), bool)
    for p in pairs:
        weights_only[p.mean] = weights_only[p.spread] = False
    np.testing.assert_allclose(stepped[weights_only], (global_vec + 3 * update)[weights_only])


def _spread_indices(pairs) -> np.ndarray:
    return np.concatenate([np.arange(p.spread.start, p.spread.stop) for p in pairs])


def test_a_kept_optimizer_carries_its_moments_into_the_next_fit():
    """fit_optimizer: without a KeptOptimizer a fresh optimizer; with one, the last fit's Adam moments."""
    import torch

    from common.task import FitContext, KeptOptimizer, fit_optimizer

    model = torch.nn.Linear(3, 1)
    context = None

    def fit() -> torch.optim.Optimizer:
        opt = fit_optimizer(context, lambda: torch.optim.Adam(model.parameters(), lr=0.01))
        for _ in range(5):
            opt.zero_grad()
            model(torch.ones(4, 3)).sum().backward()
            opt.step()
        return opt

    assert int(fit().state[model.weight]["step"]) == 5
    assert int(fit().state[model.weight]["step"]) == 5  # no KeptOptimizer: fresh every time
    kept = KeptOptimizer()
    context = FitContext(optimizer=kept)
    first = fit()
    assert kept.last is first
    context = FitContext(optimizer=KeptOptimizer(first.state_dict()["state"]))
    second = fit()
    assert int(second.state[model.weight]["step"]) == 10
    assert second.param_groups[0]["lr"] == 0.01  # the fit's own learning rate, not the kept one's


def test_one_schedule_gives_the_rounds_the_learning_rates_of_a_single_fit():
    """fit_schedule under a FitWindow: round after round, the rates (and OneCycle's momentum) a single
    fit of all the rounds' steps would take; without one, each fit replays the whole schedule."""
    import torch

    from common.task import FitContext, FitWindow, fit_schedule

    model = torch.nn.Linear(3, 1)
    context = None

    def rates(steps: int) -> list[tuple[float, float]]:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        sched = fit_schedule(
            context, lambda total: torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=total), steps
        )
        out = []
        for _ in range(steps):
            out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
            opt.step()
            sched.step()
        return out

    single = rates(4 * 5)
    replayed = [r for _ in range(4) for r in rates(5)]
    rounds = []
    for index in range(4):
        context = FitContext(window=FitWindow(index, 4))
        rounds += rates(5)
    context = None
    np.testing.assert_allclose(rounds, single, rtol=1e-12)
    assert not np.allclose([r for r, _ in replayed], [r for r, _ in single])  # per-round replay differs
    assert max(r for r, _ in replayed[15:]) > 4 * max(r for r, _ in single[15:])  # and never decays


def test_int8_chunks_never_mix_tensors_so_small_changes_survive():
    """A BatchNorm variance moving by ~1 beside conv weights moving by ~0.01: with one scale per
    4096 values the weights' changes round to zero; with chunks cut at tensor boundaries they do not."""
    rng = np.random.default_rng(3)
    weights, variances = rng.normal(0, 0.005, 3000).astype(np.float32), rng.normal(0, 1.0, 16).astype(np.float32)
    vector = np.concatenate([weights, variances])
    starts = codec.chunk_starts([3000, 16], [True, False])
    np.testing.assert_array_equal(starts, [0, 3000])
    # parameters share chunks (cut every 4096 across tensors); each buffer has its own
    mixed = codec.chunk_starts([3000, 3000, 10, 5], [True, True, False, False])
    np.testing.assert_array_equal(mixed, [0, 4096, 6000, 6010])
    shared = codec.decode(codec.encode(vector, "int8"), len(vector))
    split = codec.decode(codec.encode(vector, "int8", starts=starts), len(vector), starts)
    shared_err = np.abs(shared[:3000] - weights).mean() / np.abs(weights).mean()
    split_err = np.abs(split[:3000] - weights).mean() / np.abs(weights).mean()
    assert shared_err > 0.3 and split_err < 0.02  # relative error of the weights' change
    assert np.abs(split[3000:] - variances).max() <= np.abs(variances).max() / 127 / 2 + 1e-6
    # buffers sent exactly: a floor-sized std beside large ones survives (int8 would round it to 0)
    variances[0] = 1e-3
    vector = np.concatenate([weights, variances])
    exact = np.arange(3000, 3016)
    deflated = codec.encode(vector, "int8", starts=starts, exact=exact)
    for arrays in (deflated, {"q8": _undeflated(vector, starts, exact)}):
        decoded = codec.decode(arrays, len(vector), starts, exact)
        np.testing.assert_array_equal(decoded[3000:], variances)
        assert np.abs(decoded[:3000] - weights).max() <= np.abs(weights).max() / 127 / 2 + 1e-7
    arrays = codec.encode(vector, "int8", starts=starts, exact=exact)
    assert codec.payload_bytes(arrays) <= codec.int8_raw_bytes(len(vector), len(starts), len(exact))


def _undeflated(vector: np.ndarray, starts: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """The same int8 payload without the deflate (the codec picks whichever is smaller)."""
    import zlib

    packed = codec.encode(vector, "int8", starts=starts, exact=exact)["q8z"]
    head = 4 * len(starts)
    return np.concatenate([packed[:head], np.frombuffer(zlib.decompress(packed[head:].tobytes()), np.uint8)])

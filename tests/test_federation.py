"""`fedsite federate` end to end on the reference Task: outputs, faults, resume, privacy, what sites send."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.cli import main
from common.runs import load_model

BASE = ["federate", "--vertical", "reference", "--sites", "3", "--tiny", "--scale", "tiny", "--engine", "inprocess"]


def run(tmp_path, name, *extra, rounds=2):
    out = tmp_path / name
    code = main([*BASE, "--rounds", str(rounds), "--out", str(out), *extra])
    return code, out


def test_history_model_and_report_follow_the_contract(tmp_path, reference_registered):
    code, out = run(tmp_path, "fedavg", "--seed", "3")
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    assert history["vertical"] == "reference" and history["strategy"] == "fedavg"
    assert history["sites"] == ["site-0", "site-1", "site-2"]
    assert [r["round"] for r in history["rounds"]] == [1, 2]
    model = reference_registered.build_model(reference_registered.tiny_config())
    n_weights = sum(p.numel() for p in model.parameters())
    for record in history["rounds"]:
        assert list(record["global_eval"])[0] == "auroc"
        for site in history["sites"]:
            entry = record["sites"][site]
            assert entry["status"] == "ok"
            assert entry["train"]["loss"] > 0 and "auroc" in entry["eval"]
            # the update is one float32 weight vector: at least 4 bytes per weight crossed the wire
            assert entry["bytes_sent"] >= 4 * n_weights and entry["bytes_received"] >= 4 * n_weights
    assert set(history["cross_site"]) == {"global", "local:site-0", "local:site-1", "local:site-2"}
    assert set(history["cross_site"]["local:site-1"]) == set(history["sites"])
    assert history["privacy"] == {"epsilon": None, "delta": None}
    loaded = load_model(out / "global_model", expect="reference")
    assert loaded.metadata["metrics"]["auroc"] == pytest.approx(history["rounds"][-1]["global_eval"]["auroc"])
    assert "![training curves](curves.png)" in (out / "report.md").read_text()
    assert (out / "curves.png").stat().st_size > 1000


def test_a_failing_site_is_recorded_and_rounds_go_on(tmp_path, reference_registered):
    code, out = run(tmp_path, "faulty", "--fail-site", "1", "--no-cross-site", "--min-results", "2")
    assert code == 3  # partial success: the run completed without one site
    history = json.loads((out / "history.json").read_text())
    for record in history["rounds"]:
        assert record["sites"]["site-1"]["status"] == "failed"
        assert "fault drill" in record["sites"]["site-1"]["error"]
        assert record["sites"]["site-0"]["status"] == record["sites"]["site-2"]["status"] == "ok"
        assert record["aggregated"] is True
    # with min_results above the sites that answer, rounds are recorded but the model does not move
    code, strict = run(tmp_path, "strict", "--fail-site", "1", "--no-cross-site", "--min-results", "3")
    assert code == 3
    strict_history = json.loads((strict / "history.json").read_text())
    assert not any(r["aggregated"] for r in strict_history["rounds"])
    first = strict_history["rounds"][0]["global_eval"]["auroc"]
    assert strict_history["rounds"][1]["global_eval"]["auroc"] == pytest.approx(first)


def test_a_hanging_site_times_out(tmp_path, reference_registered):
    code, out = run(
        tmp_path, "hang", "--fail-site", "2", "--fail-mode", "hang", "--round-timeout", "3", "--no-cross-site", rounds=1
    )
    assert code == 3
    entry = json.loads((out / "history.json").read_text())["rounds"][0]["sites"]["site-2"]
    assert entry["status"] == "failed" and entry["error"].startswith("timed out after")


def test_resume_ends_with_the_same_model_as_an_uninterrupted_run(tmp_path, reference_registered):
    extra = ("--strategy", "fedadam", "--compression", "int8", "--seed", "5", "--no-cross-site")
    code, full = run(tmp_path, "full", *extra, rounds=3)
    assert code == 0
    code, part = run(tmp_path, "part", *extra, rounds=2)  # "interrupted" after round 2
    assert code == 0
    code, _ = run(tmp_path, "part", *extra, "--resume", rounds=3)
    assert code == 0
    a = torch.load(full / "global_model" / "model.pt", weights_only=True)
    b = torch.load(part / "global_model" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(json.loads((part / "history.json").read_text())["rounds"]) == 3
    # the sites' optimizer moments stayed at the sites (the last two rounds', for --resume)
    assert sorted(p.name for p in (part / "site_state" / "site-0").glob("optimizer-*.pt")) == [
        "optimizer-2.pt",
        "optimizer-3.pt",
    ]
    # resuming with different settings is refused with a one-line error
    assert run(tmp_path, "part", "--strategy", "median", "--resume", rounds=4)[0] == 2


def test_local_norm_keeps_each_sites_batchnorm_and_resumes_exactly(tmp_path, reference_registered):
    from common.config import to_toml
    from federation import codec
    from federation.records import GlobalModel
    from federation.settings import FederationSettings
    from federation.sitework import SiteWorker

    extra = ("--local-norm", "--set", "norm=true", "--seed", "4", "--no-cross-site")
    assert run(tmp_path, "full", *extra, rounds=3)[0] == 0
    assert run(tmp_path, "part", *extra, rounds=2)[0] == 0
    code, part = run(tmp_path, "part", *extra, "--resume", rounds=3)
    assert code == 0
    full = tmp_path / "full"
    hub = torch.load(full / "global_model" / "model.pt", weights_only=True)
    resumed = torch.load(part / "global_model" / "model.pt", weights_only=True)
    assert all(torch.equal(hub[k], resumed[k]) for k in hub)
    own = [torch.load(full / "site_state" / f"site-{k}" / "norm-3.pt", weights_only=True) for k in range(3)]
    again = torch.load(part / "site_state" / "site-0" / "norm-3.pt", weights_only=True)
    assert all(torch.equal(own[0][k], again[k]) for k in own[0])
    assert sorted(p.name for p in (part / "site_state" / "site-0").glob("norm-*.pt")) == ["norm-2.pt", "norm-3.pt"]
    # only the normalisation layer stays at the site, and each site's is its own, not the hub's
    entries = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert set(own[0]) == {f"body.1.{n}" for n in entries}
    mean = "body.1.running_mean"
    assert not torch.allclose(own[0][mean], own[1][mean]) and not torch.allclose(own[0][mean], hub[mean])
    # a site scores the hub's model under its own normalisation, and another site's model as sent
    cfg = reference_registered.tiny_config().__class__(norm=True)
    settings = FederationSettings(vertical="reference", config_toml=to_toml(cfg), local_norm=True, rounds=3)
    data_dir = next((full / "data" / "site-0").rglob("data.npz")).parent
    worker = SiteWorker(settings, "site-0", data_dir, full / "site_state" / "site-0")
    model = GlobalModel(codec.flatten(hub, worker.layout))
    worker.evaluate(model, "test", norm_round=3)
    state = worker.model.state_dict()
    assert torch.equal(state[mean], own[0][mean]) and torch.equal(state["body.0.weight"], hub["body.0.weight"])
    worker.evaluate(model, "test", norm_round=-1)
    assert torch.equal(worker.model.state_dict()[mean], hub[mean])


def test_one_schedule_tells_each_rounds_fit_its_place_in_the_run(tmp_path, reference_registered, monkeypatch):
    """--one-schedule: every site's fit in round r sees FitWindow(r - 1, rounds) (common.task.fit_schedule
    then takes that slice of one schedule); by default, and in the local-only fits, no window."""
    seen = []
    real_fit = reference_registered.fit

    def spy(model, *args, **kwargs):
        context = kwargs.get("context")
        window = context.window if context is not None else None
        seen.append(None if window is None else (window.index, window.rounds))
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(reference_registered, "fit", spy)
    assert run(tmp_path, "one", "--one-schedule", rounds=3)[0] == 0
    assert sorted(w for w in seen if w is not None) == [(i, 3) for i in range(3) for _ in range(3)]
    assert seen.count(None) == 3  # the three local-only models: one whole fit each
    seen.clear()
    assert run(tmp_path, "per-round", "--no-cross-site", rounds=2)[0] == 0
    assert seen == [None] * 6


@pytest.mark.parametrize("strategy", ["fedprox", "median", "trimmed-mean", "krum"])
def test_every_strategy_trains(tmp_path, reference_registered, strategy):
    code, out = run(tmp_path, strategy, "--strategy", strategy, "--no-cross-site", "--local-epochs", "3")
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    assert history["strategy"] == strategy
    assert history["rounds"][-1]["global_eval"]["auroc"] > 0.6


def test_dp_and_int8_are_reported(tmp_path, reference_registered):
    code, out = run(tmp_path, "dp", "--clip", "1.0", "--noise", "0.8", "--compression", "int8", "--no-cross-site")
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    assert history["privacy"]["delta"] == 1e-5 and 0 < history["privacy"]["epsilon"] < 100
    assert history["compression"]["payload_ratio"] >= 3.9
    for record in history["rounds"]:
        for entry in record["sites"].values():
            assert entry["train"]["update-norm"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["--vertical", "nosuch"],
        ["--vertical", "reference", "--strategy", "bogus"],
        ["--vertical", "reference", "--compression", "zip"],
        ["--vertical", "reference", "--set", "nosuchkey=1"],
        ["--vertical", "reference", "--out", "FILE"],
    ],
)
def test_bad_options_exit_2(tmp_path, reference_registered, args, capsys):
    (tmp_path / "FILE").write_text("not a directory")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    code = main(["federate", "--out", str(tmp_path / "x"), "--engine", "inprocess", "--tiny", *args])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedsite: error:") and "Traceback" not in "".join(err)


def test_sites_send_only_model_arrays_and_scalar_metrics(tmp_path, reference_registered):
    """Capture every reply a site produces and check it against the site's own data."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    from common import config
    from federation.client_app import app as client_app
    from federation.grid import InProcessGrid
    from federation.partition import prepare_sites
    from federation.settings import FederationSettings

    task = reference_registered
    prepare_sites(task, tmp_path / "data", 2, seed=0, scale="tiny")
    replies = []

    def spy(message, context):
        reply = client_app(message, context)
        replies.append((message.metadata.message_type, reply))
        return reply

    settings = FederationSettings(
        vertical="reference",
        task_module="reference_task",
        config_toml=config.to_toml(task.tiny_config()),
        sites=2,
        rounds=1,
        data_root=str(tmp_path / "data"),
        out_dir=str(tmp_path / "run"),
    )
    from federation.server_app import run_federation

    run_federation(InProcessGrid(spy, 2), settings)
    samples = np.concatenate([np.load(tmp_path / "data" / f"site-{k}" / "data.npz")["x"].reshape(-1) for k in (0, 1)])
    kinds = {kind for kind, _ in replies}
    assert kinds == {"query", "train", "evaluate", "train.local"}
    for kind, reply in replies:
        assert not reply.has_error()
        for name, record in reply.content.items():
            if kind == "query":  # the handshake: the site's configured name and nothing else
                assert isinstance(record, ConfigRecord) and dict(record) == {"name": record["name"]}
                assert str(record["name"]).startswith("site-")
                continue
            assert isinstance(record, (ArrayRecord, MetricRecord)), (kind, name)
            if isinstance(record, MetricRecord):
                assert all(isinstance(v, float) for v in record.values())
                continue
            for array in record.values():
                values = array.numpy()
                assert values.dtype.kind in "fiu" and values.ndim == 1
                # no array carries the site's samples (a 32-long row of raw signal would match here)
                if values.dtype.kind == "f" and values.size >= 32:
                    assert not np.isin(values[:32], samples).all()


def test_each_site_reads_its_data_once_and_scores_every_kth_round(tmp_path, reference_registered, monkeypatch):
    calls = []
    load = type(reference_registered).load_data

    def counting(self, cfg, source, split):
        calls.append((str(source), split))
        return load(self, cfg, source, split)

    monkeypatch.setattr(type(reference_registered), "load_data", counting)
    code, out = run(tmp_path, "cached", "--no-cross-site", "--eval-split", "test", "--eval-every", "2", rounds=3)
    assert code == 0
    # 3 sites x (train, test): each read once although every round trains at every site
    assert len(calls) == 6 and len(set(calls)) == 6
    # --eval-every 2: sites score rounds 2 and 3 (the last), not round 1
    scored = [bool(r["global_eval"]) for r in json.loads((out / "history.json").read_text())["rounds"]]
    assert scored == [False, True, True]

"""Secure aggregation (Flower's SecAgg+) in our loop: same model as FedAvg, a dropout survived, the hub
sees only masked vectors, incompatible options refused."""

from __future__ import annotations

import json

import numpy as np
import torch

from common.cli import main

BASE = ["federate", "--vertical", "reference", "--sites", "3", "--tiny", "--scale", "tiny", "--engine", "inprocess",
        "--no-cross-site", "--seed", "1"]  # fmt: skip


def weights(out):
    return torch.load(out / "global_model" / "model.pt", weights_only=True)


def test_secure_aggregation_ends_where_fedavg_does_and_survives_a_dropout(tmp_path, reference_registered):
    # one round: the same aggregate as FedAvg up to SecAgg+'s quantization (secagg.error_bound: 2^22
    # levels over [-8, 8] of updates weighted by examples / 1000), plus float32 rounding of the sum
    from federation.secagg import error_bound

    assert main([*BASE, "--rounds", "1", "--out", str(tmp_path / "plain")]) == 0
    assert main([*BASE, "--rounds", "1", "--out", str(tmp_path / "secure"), "--secagg"]) == 0
    plain, secure = weights(tmp_path / "plain"), weights(tmp_path / "secure")
    history = json.loads((tmp_path / "secure" / "history.json").read_text())
    assert history["secure_aggregation"]["key_shares"] == 3 and history["secure_aggregation"]["threshold"] == 2
    bound = error_bound([e["train"]["num-examples"] for e in history["rounds"][0]["sites"].values()])
    for k in (k for k in plain if plain[k].is_floating_point()):
        rounding = 2 * float(np.spacing(plain[k].abs().max().numpy()))
        assert float((plain[k] - secure[k]).abs().max()) <= bound + rounding, (k, bound)
    gaps = [float((plain[k].float() - secure[k].float()).abs().max()) for k in plain if plain[k].is_floating_point()]
    assert max(gaps) > 0  # it did go through the quantizing protocol, not the plain path
    for record in history["rounds"]:
        assert record["aggregated"] and all(e["status"] == "ok" for e in record["sites"].values())
        assert all(e["train"]["loss"] > 0 for e in record["sites"].values())
        assert all(e["bytes_sent"] > 0 for e in record["sites"].values())
    # one of three sites fails during training (after the key exchange): the others' shares unmask
    code = main([*BASE, "--rounds", "2", "--out", str(tmp_path / "dropout"), "--secagg", "--fail-site", "2"])
    assert code == 3
    history = json.loads((tmp_path / "dropout" / "history.json").read_text())
    for record in history["rounds"]:
        assert record["aggregated"]
        assert record["sites"]["site-2"]["status"] == "failed" and "fault drill" in record["sites"]["site-2"]["error"]
        assert record["sites"]["site-0"]["status"] == record["sites"]["site-1"]["status"] == "ok"
    assert main([*BASE, "--rounds", "2", "--out", str(tmp_path / "two"), "--fail-site", "2"]) == 3
    dropped, two = weights(tmp_path / "dropout"), weights(tmp_path / "two")  # plain FedAvg of sites 0 and 1
    gaps = [float((two[k].float() - dropped[k].float()).abs().max()) for k in two if two[k].is_floating_point()]
    assert max(gaps) < 1e-3, gaps


def test_the_hub_receives_only_masked_vectors(tmp_path, reference_registered):
    """Every reply the hub gets in a secure round: no array records, and the masked vectors it sums
    look nothing like the site's update, while their sum unmasks to the mean update."""
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    from federation import secagg
    from federation.client_app import app
    from federation.grid import InProcessGrid
    from federation.partition import prepare_sites
    from federation.settings import FederationSettings
    from federation.sitework import load_task

    settings = FederationSettings(vertical="reference", task_module="reference_task", sites=3, rounds=1, seed=1,
                                  secagg=True, out_dir=str(tmp_path / "out"))  # fmt: skip
    task = load_task(settings)
    suffix = prepare_sites(task, tmp_path / "data", 3, seed=1, scale="tiny")
    settings = settings.replace(data_root=str(tmp_path / "data"), source_suffix=suffix)
    grid = InProcessGrid(app, 3)
    seen = []
    original = grid.pull_messages

    def spy(message_ids):  # every reply reaches the hub through pull_messages
        replies = list(original(message_ids))
        seen.extend(replies)
        return replies

    grid.pull_messages = spy
    model = task.build_model(task.config_cls())
    from federation import codec

    vector = codec.flatten(model.state_dict(), codec.model_layout(model))
    nodes = {f"site-{k}": nid for k, nid in enumerate(sorted(grid.get_node_ids()))}
    job = settings.replace().to_config() | {"round": 1}
    mean, results = secagg.secure_train(grid, nodes, vector, job, 1, None)
    assert mean is not None and all(not r["error"] for r in results.values()), results
    masked = []
    for reply in seen:
        assert not reply.has_error()
        assert not any(len(record) for record in reply.content.array_records.values())
        configs = reply.content.config_records[RECORD_KEY_CONFIGS]
        if Key.MASKED_PARAMETERS in configs:
            masked.append(np.concatenate([bytes_to_ndarray(b).ravel() for b in configs[Key.MASKED_PARAMETERS]]))
    assert len(masked) == 3
    for vec in masked:  # uniform over [0, 2^32): no trace of the update (|corr| with it within noise)
        corr = np.corrcoef(vec[1 : 1 + mean.size].astype(np.float64), mean.astype(np.float64))[0, 1]
        assert abs(corr) < 5 / np.sqrt(mean.size), (corr, mean.size)  # 5 sigma of a random pair's
    assert np.abs(mean).max() > 0


def test_incompatible_options_are_refused_with_exit_2(tmp_path, reference_registered, capsys):
    for extra, word in [(["--strategy", "median"], "median"), (["--compression", "int8"], "int8"),
                        (["--fail-site", "0", "--fail-mode", "hang"], "hang"),
                        (["--sites", "1"], "at least 2 sites")]:  # fmt: skip
        assert main([*BASE, "--rounds", "1", "--out", str(tmp_path / "x"), "--secagg", *extra]) == 2
        err = capsys.readouterr().err
        assert "--secagg" in err and word in err and "Traceback" not in err

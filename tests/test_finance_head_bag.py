"""`head_bag = K`: K tree models in the head, saved in head.pkl and applied alike by score and serve.

Built on the session's tiny model (its network and data) so it costs seconds: the bag is fitted by
the same `fit_with_head` `finance train` calls, and the model directory then holds it.
"""

from __future__ import annotations

import csv
import pickle
import shutil

import numpy as np
from finance_tiny import TINY, batch_scores

from common import config
from common.cli import main
from common.runs import load_model
from verticals.finance.api import fit_with_head
from verticals.finance.data import load_dataset
from verticals.finance.head import HEAD_FILE, fit_head, load_head, logit
from verticals.finance.serve import load_service


def test_a_bag_of_heads_is_fitted_saved_scored_and_served_alike(tiny_finance, tmp_path):
    data, trained = tiny_finance
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    loaded = load_model(model)
    cfg = config.replace(loaded.cfg, head_bag=2, epochs=1, network_weight=-1.0)  # -1: chosen again
    dataset = load_dataset(data, cfg)
    _, head, fitted, metrics = fit_with_head(loaded.model, dataset, cfg, seed=3)
    assert len(head.members) == 2 and "network_weight_one_head" in metrics
    # member 0 is the head head_bag = 1 fits with that seed; member 1 is another model
    one = fit_head(
        dataset.features, dataset.tree, dataset.label, dataset.spec, None, seed=3, max_rows=cfg.head_max_rows
    )
    x = np.random.default_rng(0).normal(size=(5, head.model.n_features_in_)).astype(np.float32)
    np.testing.assert_array_equal(head.first(1).probabilities(x), one.probabilities(x))
    members = [logit(m.predict_proba(x)[:, 1]) for m in head.members]
    assert not np.allclose(members[0], members[1])
    assert np.allclose(logit(head.probabilities(x)), np.mean(members, 0), atol=1e-4)  # logits averaged

    (model / HEAD_FILE).write_bytes(pickle.dumps(head))
    rows = list(csv.DictReader(open(data)))[:30]
    expected = batch_scores(rows, model, tmp_path)
    service = load_service(model)
    got = [service.score(r)["fraud_probability"] for r in rows]  # one request a row, as a live stream
    assert np.allclose(got, [expected[r["txn_id"]] for r in rows], atol=1e-5)
    explained = load_service(model).score(rows, explain=True)  # `?explain=1`: the same scores, with reasons
    assert np.allclose([e["fraud_probability"] for e in explained], got, atol=1e-5)
    # one model's head.pkl written before bags (no `bag` attribute) loads and scores as before
    old = head.first(1)
    del old.__dict__["bag"]
    (model / HEAD_FILE).write_bytes(pickle.dumps(old))
    assert len(load_head(model).members) == 1
    np.testing.assert_array_equal(load_head(model).probabilities(x), one.probabilities(x))
    bad = ["finance", "train", "--data", str(data), "--out", str(tmp_path / "m"), *TINY, "--set", "head_bag=0"]
    assert main(bad) == 2

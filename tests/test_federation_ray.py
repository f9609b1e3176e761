"""The same federation on Flower's own simulation engine (Ray workers, real message passing)."""

from __future__ import annotations

import json
import time

import pytest

from common.cli import main


@pytest.mark.slow
def test_three_sites_two_rounds_on_flower_simulation_engine(tmp_path, reference_registered):
    out = tmp_path / "ray"
    start = time.perf_counter()
    code = main(
        ["federate", "--vertical", "reference", "--sites", "3", "--rounds", "2", "--out", str(out)]
        + ["--tiny", "--scale", "tiny", "--engine", "ray", "--no-cross-site", "--fail-site", "0"]
    )
    elapsed = time.perf_counter() - start
    assert code == 3  # completed without site-0: partial success
    history = json.loads((out / "history.json").read_text())
    assert history["sites"] == ["site-0", "site-1", "site-2"]
    for record in history["rounds"]:
        assert record["sites"]["site-0"]["status"] == "failed"  # an exception in a Ray worker is a failed site
        assert record["sites"]["site-1"]["status"] == record["sites"]["site-2"]["status"] == "ok"
    assert (out / "global_model" / "model.pt").exists()
    assert elapsed < 90

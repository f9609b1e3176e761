"""`--quick` on every train, synth and federate command: shown in its help, and it selects the
vertical's "small" preset and small data (issue 19 item 1).

The commands' own work is recorded rather than run here (training at the small preset takes about a
minute per vertical; the commands themselves are exercised end to end in each vertical's tests):
what is checked is that the flag reaches the function with the small preset and the small data.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from common import cli, config
from common.registry import get_task

COMMANDS = [
    ("medical", "synth"),
    ("medical", "train"),
    ("finance", "synth"),
    ("finance", "train"),
    ("manufacturing", "synth"),
    ("manufacturing", "train"),
    ("federate",),
]


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(args))
    return code, out.getvalue()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_quick_is_in_the_help(command):
    code, text = _cli(*command, "--help")
    assert code == 0 and "--quick" in text


@pytest.fixture
def recorded(monkeypatch):
    """Replace each command's worker with one that records its arguments."""
    calls: dict[str, tuple] = {}

    def record(name, result=None):
        def worker(*args, **kwargs):
            calls[name] = (args, kwargs)
            return result

        return worker

    monkeypatch.setattr(
        "verticals.medical.api.train_model",
        record("medical", {"out": "m", "metrics": {}, "rejected": [], "skipped": []}),
    )
    monkeypatch.setattr("verticals.finance.api.train_model", record("finance", {}))
    monkeypatch.setattr("verticals.manufacturing.api.train", record("manufacturing", ("m", {})))
    monkeypatch.setattr("verticals.medical.api.synth_dataset", record("medical synth", Path("written")))
    monkeypatch.setattr("data_adapters.synth.transactions.write", record("finance synth", "t.csv"))
    monkeypatch.setattr("verticals.manufacturing.api.synth", record("manufacturing synth"))
    monkeypatch.setattr("federation.sim.simulate", record("federate", {"rounds": []}))
    monkeypatch.setattr("common.runs.read_metadata", lambda out: {})
    return calls


@pytest.mark.parametrize("vertical", ["medical", "finance", "manufacturing"])
def test_train_quick_starts_from_the_small_preset(vertical, recorded, tmp_path):
    args = ["--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "m"), "--set", "seed=5"]
    if vertical == "medical":
        args += ["--annotations", str(tmp_path / "a.csv")]
    assert _cli(vertical, "train", *args, "--quick")[0] == 0
    cfg = next(a for a in recorded[vertical][0] if dataclass_of(a, vertical))
    small = get_task(vertical).preset("small")
    assert config.to_dict(cfg) == config.to_dict(config.replace(small, seed=5))  # --set applies on top
    assert _cli(vertical, "train", *args)[0] == 0  # without --quick: the defaults
    cfg = next(a for a in recorded[vertical][0] if dataclass_of(a, vertical))
    assert config.to_dict(cfg) == config.to_dict(config.replace(get_task(vertical).preset("default"), seed=5))
    assert small != get_task(vertical).preset("default")


def dataclass_of(value, vertical: str) -> bool:
    return isinstance(value, get_task(vertical).config_cls)


def test_synth_quick_writes_small_data(recorded, tmp_path):
    assert _cli("medical", "synth", "--out", str(tmp_path / "m"), "--quick")[0] == 0
    args, kwargs = recorded["medical synth"]
    assert args[1] == 6 and kwargs["scale"] == "small"
    assert _cli("medical", "synth", "--out", str(tmp_path / "m"), "--quick", "--scale", "tiny")[0] == 0
    assert recorded["medical synth"][1]["scale"] == "tiny"  # an explicit --scale wins
    assert _cli("finance", "synth", "--out", str(tmp_path / "f"), "--quick")[0] == 0
    assert recorded["finance synth"][0][1:3] == (400, 20)
    assert _cli("finance", "synth", "--out", str(tmp_path / "f"))[0] == 0
    assert recorded["finance synth"][0][1:3] == (3000, 30)
    assert _cli("manufacturing", "synth", "--out", str(tmp_path / "p"), "--quick")[0] == 0
    assert recorded["manufacturing synth"][1]["scale"] == "small"


def test_federate_quick_runs_the_small_preset(recorded, tmp_path):
    from federation.sim import model_config

    assert (
        _cli("federate", "--vertical", "finance", "--out", str(tmp_path / "r"), "--quick", "--set", "epochs=1")[0] == 0
    )
    task = get_task("finance")
    assert recorded["federate"][1]["cfg"] == config.replace(task.preset("small"), epochs=1)
    assert recorded["federate"][1]["scale"] == "small"
    assert model_config(task, "finance", None, ["epochs=1"], "small") == config.replace(task.preset("small"), epochs=1)
    assert _cli("federate", "--vertical", "finance", "--out", str(tmp_path / "r"), "--quick", "--tiny")[0] == 2

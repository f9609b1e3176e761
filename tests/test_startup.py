"""`fedsite --help` and `--version` start fast: no torch, OpenCV or Flower before a command needs them.

Each case runs the CLI in a fresh interpreter (start-up included) and reports which heavy modules it
imported. Measured here on 2 cores at load ~1: 0.08 s (it was 2.2 s, and 7-11 s under load, while
the manufacturing package imported torch for its TASK). The bound is generous for a shared machine
under load; what it guards is the import list, which is exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "cv2", "flwr", "onnxruntime", "numpy", "pydicom", "torch_geometric")
BOUND_S = 3.0  # the target is 1.5 s; a loaded 2-core machine may double it

PROBE = """
import json, sys
from common.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
print("IMPORTED " + json.dumps(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("manufacturing", "train", "--help"),
        ("medical", "train", "--help"),
        ("finance", "train", "--help"),
        ("federate", "--help"),
    ],
    ids=lambda a: " ".join(a),
)
def test_help_and_version_start_without_heavy_imports(args):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(("Usage:", "fedsite "))
    imported = json.loads(proc.stderr.rsplit("IMPORTED ", 1)[1])
    assert imported == [], f"fedsite {' '.join(args)} imported {imported}"
    assert seconds < BOUND_S, f"fedsite {' '.join(args)} took {seconds:.2f} s"

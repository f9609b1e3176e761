"""Paired timing of the default DefectNet in ONNX Runtime fp32 with and without the grain stage.

Both graphs are timed alternately in one process (batch 4, 256 px, one thread), so the ratio holds
on a busy machine even when the absolute images/s do not.

    python benchmarks/grain_cost.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.export import export_onnx, run_session, session
from verticals.manufacturing.config import InspectConfig
from verticals.manufacturing.task import model_from_config


def main() -> int:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="fedsite-grain-cost-") as tmp:
        d = Path(tmp)
        x = torch.rand(4, 3, 256, 256)
        sess = {}
        for g in (False, True):
            m = model_from_config(InspectConfig(grain=g)).eval()
            if g:
                m.grain_affine[2] = 1.0
            if m.memory_size:
                m.memory_affine[2] = 1.0
            sess[g] = session(export_onnx(m, (x,), d / f"m{int(g)}.onnx"), threads=1)
        t = {False: [], True: []}
        for _ in range(3):
            run_session(sess[False], [x.numpy()])
            run_session(sess[True], [x.numpy()])
        for _ in range(15):
            for g in (False, True):
                s = time.perf_counter()
                run_session(sess[g], [x.numpy()])
                t[g].append(time.perf_counter() - s)
        for g in (False, True):
            ms = 1000 * float(np.median(t[g]))
            print(f"grain={g}: median {ms:.1f} ms / batch 4 -> {4000 / ms:.1f} images/s (ORT fp32, 1 thread)")
        print("load", os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

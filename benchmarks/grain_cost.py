"""Paired timing of the default DefectNet in ONNX Runtime fp32 against variants of its config.

The default graph and each variant (`--variant key=value[,key=value]`, default: the grain stage)
are timed alternately in one process (batch 4, 256 px, one thread), so the ratios hold on a busy
machine even when the absolute images/s do not.

    python benchmarks/grain_cost.py [--variant grain=true] [--variant fine_input=true]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from common.export import export_onnx, run_session, session
from verticals.manufacturing.config import InspectConfig
from verticals.manufacturing.task import model_from_config


def _config(variant: str) -> InspectConfig:
    """InspectConfig with `key=value,...` applied (bools as true/false), typed like the field."""
    types = {f.name: type(getattr(InspectConfig(), f.name)) for f in fields(InspectConfig)}
    changes = {}
    for item in filter(None, variant.split(",")):
        key, value = item.split("=", 1)
        changes[key] = value.lower() == "true" if types[key] is bool else types[key](value)
    return replace(InspectConfig(), **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=None, help="key=value[,key=value] against defaults")
    args = parser.parse_args(argv)
    names = ["default", *(args.variant or ["grain=true"])]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="fedsite-config-cost-") as tmp:
        d = Path(tmp)
        x = torch.rand(4, 3, 256, 256)
        sess = {}
        for i, name in enumerate(names):
            m = model_from_config(_config("" if name == "default" else name)).eval()
            if m.grain:
                m.grain_affine[2] = 1.0
            if m.memory_size:
                m.memory_affine[2] = 1.0
            sess[name] = session(export_onnx(m, (x,), d / f"m{i}.onnx"), threads=1)
        t = {name: [] for name in names}
        for _ in range(3):
            for name in names:
                run_session(sess[name], [x.numpy()])
        for _ in range(15):
            for name in names:
                s = time.perf_counter()
                run_session(sess[name], [x.numpy()])
                t[name].append(time.perf_counter() - s)
        for name in names:
            ms = 1000 * float(np.median(t[name]))
            print(f"{name}: median {ms:.1f} ms / batch 4 -> {4000 / ms:.1f} images/s (ORT fp32, 1 thread)")
        print("load", os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

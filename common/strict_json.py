"""JSON as strict readers accept it: NaN and infinity become null.

Python's json writes NaN/Infinity tokens that are not JSON; browsers, jq and most languages reject such
a file. A metric that is undefined on some data (FROC at an operating point no scan reaches, AUROC on
one class) is exactly that, so every JSON file and --json output of fedsite goes through here. This
module imports nothing heavy, so command-line modules can use it without slowing `--help`.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(data: Any) -> Any:
    """`data` with every NaN/inf float replaced by None: JSON has no NaN, and strict readers reject it."""
    if isinstance(data, dict):
        return {k: finite_or_null(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_null(v) for v in data]
    if isinstance(data, float) or hasattr(data, "dtype"):  # numpy scalars too
        try:
            value = float(data)
        except (TypeError, ValueError):
            return data
        return value if math.isfinite(value) else None
    return data


def to_json(data: Any) -> str:
    """Pretty, strict JSON (NaN/inf become null), as every JSON file and --json output of fedsite is."""
    return json.dumps(finite_or_null(data), indent=2, default=float, allow_nan=False)

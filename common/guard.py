"""Refuse to judge a change by a metric that cannot show one.

A relative drop is measured against the metric before the change. When that metric is 0, NaN or
infinite on the evaluation data (no positives in the held-out period, a model that never fires, an
empty split), every "drop" is 0 % or undefined and a budget check passes whatever the change did. So
commands that decide by comparing metrics (`compress`, `finance update`) stop with a clear message
instead, unless the user says `--force`, and then the report says the guard was off.
"""

from __future__ import annotations

import math

from common.errors import UserError
from common.progress import log


def unjudgeable_reason(value: float | None) -> str | None:
    """Why `value` cannot anchor a comparison, or None when it can."""
    if value is None:
        return "is undefined"
    if not math.isfinite(value):
        return f"is {value} (not finite)"
    if value == 0:
        return "is 0"
    return None


def require_judgeable(value: float | None, what: str, *, force: bool, hint: str = "") -> str | None:
    """Raise UserError when `value` cannot anchor a comparison, unless `force` (then warn and return why)."""
    reason = unjudgeable_reason(value)
    if reason is None:
        return None
    message = f"{what} {reason} on the evaluation data, so a drop cannot be measured"
    if not force:
        raise UserError(f"{message}{'; ' + hint if hint else ''}; pass --force to go on without the guard")
    log(f"warning: {message}; going on because of --force (the metric guard is off)")
    return message

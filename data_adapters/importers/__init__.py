"""Built-in readers for the public formats fraud teams benchmark on: `--format amlworld|paysim|elliptic`.

Each importer is a preset `ColumnMapping` (plus, for Elliptic's three files, its own row source),
so a downloaded file is read as it is, validated like any export, and the user's `--columns`
can still override any target.
"""

from __future__ import annotations

from common.errors import UserError
from data_adapters.column_mapping import ColumnMapping

FORMATS = ("contract", "amlworld", "paysim", "elliptic")


def mapping_for(fmt: str = "contract", columns: str = "") -> ColumnMapping | None:
    """The mapping for `--format fmt` merged with `--columns columns`; None for a plain contract CSV."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    user = ColumnMapping.parse(columns) if columns.strip() else None
    if fmt == "contract":
        return user
    if fmt == "amlworld":
        from data_adapters.importers.amlworld import mapping
    elif fmt == "paysim":
        from data_adapters.importers.paysim import mapping
    else:
        from data_adapters.importers.elliptic import mapping
    preset = mapping()
    return preset.merged(user) if user else preset

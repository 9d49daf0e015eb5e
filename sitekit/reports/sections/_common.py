"""What every section module shares: subject-id hiding, number formatting, the FDR level."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ID_COLUMNS", "ALPHA", "drop_ids", "keyword_build"]

#: Columns that identify subjects (or point at their files); hidden unless ``show_ids``.
ID_COLUMNS = frozenset({
    "subject_id", "subject", "case_id", "case", "patient_id", "patient", "id", "image", "mask",
    "image_path", "mask_path", "image_hash", "mask_hash", "scan_id", "row_id", "sample_id", "row",
})

ALPHA = 0.05
#: Above this many features, site predictability runs on principal components.
MAX_PREDICTABILITY_FEATURES = 200


def drop_ids(df: pd.DataFrame, show_ids: bool) -> pd.DataFrame:
    """``df`` without subject-identifying columns unless ``show_ids``."""
    if show_ids or df is None:
        return df
    keep = [c for c in df.columns if str(c).lower() not in ID_COLUMNS]
    return df.loc[:, keep]


def keyword_build(section: Callable[..., Any], what: str = "") -> Callable[[Mapping[str, Any]], Any]:
    """The ``build(results)`` of a section module whose results are the keyword arguments of
    its ``section`` function (``what`` names them in the docstring)."""

    def build(results: Mapping[str, Any]):
        return section(**results)

    build.__doc__ = (
        f"The section from ``results``: the keyword arguments of :func:`{section.__name__}`"
        f"{f' ({what})' if what else ''}.\n\n"
        "Parameters\n----------\nresults : mapping of str to object\n\n"
        "Returns\n-------\nSection\n"
    )
    return build


def _fmt(v, digits=2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if not np.isfinite(f) else f"{f:.{digits}f}"


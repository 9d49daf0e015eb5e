"""JSON conversion shared by every module that writes JSON (results, model metadata, reports).

One function, :func:`to_jsonable`, turns the values sitekit produces (numpy scalars and arrays,
pandas frames and series, paths, dates, tuples and sets) into plain JSON types.  Non-finite
floats become ``None`` by default (JSON has no NaN); pass ``nonfinite="keep"`` where a caller
writes with ``allow_nan=True`` on purpose.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["to_jsonable", "dumps"]


def to_jsonable(value: Any, *, nonfinite: Literal["null", "keep"] = "null") -> Any:
    """Return ``value`` as plain JSON data (dict, list, str, int, float, bool, None).

    Parameters
    ----------
    value : object
        numpy scalars/arrays, pandas DataFrame/Series, mappings, sequences, sets, paths,
        dates and plain Python values.  DataFrames become a list of records.
    nonfinite : {"null", "keep"}, default="null"
        What NaN and +-inf floats become: ``None`` (valid JSON) or kept as floats.

    Returns
    -------
    object
        Data that :func:`json.dumps` can write.

    Examples
    --------
    >>> import numpy as np
    >>> to_jsonable({"n": np.int64(3), "x": np.array([1.5, np.nan]), "p": (1, 2)})
    {'n': 3, 'x': [1.5, None], 'p': [1, 2]}
    """
    def conv(v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, bool | np.bool_):
            return bool(v)
        if isinstance(v, numbers.Integral):
            return int(v)
        if isinstance(v, numbers.Real):
            f = float(v)
            return f if (math.isfinite(f) or nonfinite == "keep") else None
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, pd.DataFrame):
            return [conv(r) for r in v.to_dict(orient="records")]
        if isinstance(v, pd.Series):
            return conv(v.to_dict())
        if isinstance(v, np.ndarray):
            return [conv(x) for x in v.tolist()]
        if isinstance(v, list | tuple | set | frozenset):
            return [conv(x) for x in (sorted(v, key=str) if isinstance(v, set | frozenset) else v)]
        if isinstance(v, datetime | date | pd.Timestamp):
            return v.isoformat()
        if isinstance(v, PurePath | Path):
            return str(v)
        if v is pd.NA or v is pd.NaT:
            return None
        if isinstance(v, np.generic):
            return conv(v.item())
        return str(v)

    return conv(value)


def dumps(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Serialise ``value`` with :func:`to_jsonable` first; strict JSON (no NaN literals)."""
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False)

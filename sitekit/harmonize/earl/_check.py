"""Check measured recovery coefficients against EARL bands."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sitekit.exceptions import ValidationError
from sitekit.harmonize.earl._standards import STANDARDS, Standard, load_standard

__all__ = ["METRIC_COLUMNS", "check", "verdict", "resolve_standards"]

#: measurement column of each standard metric
METRIC_COLUMNS = {"A50": "rc_a50", "MAX": "rc_max", "PEAK": "rc_peak"}
CHECK_COLUMNS = ["site", "standard", "sphere_mm", "metric", "rc", "lower", "upper", "passed", "margin",
                 "verified", "standard_version"]


def resolve_standards(standard) -> list[Standard]:
    """``"EARL1"``, ``"EARL2"``, ``"all"`` or a list of them -> loaded standards.

    (The names of the shipped standards come from :func:`list_standards`.)
    """
    if isinstance(standard, Standard):
        return [standard]
    if isinstance(standard, str) and standard.lower() == "all":
        return [load_standard(s) for s in STANDARDS]
    if isinstance(standard, list | tuple):
        return [s for item in standard for s in resolve_standards(item)]
    return [load_standard(standard)]


def check(measurement, *, standard="EARL1") -> pd.DataFrame:
    """Compare recovery coefficients with the bands of a standard.

    Parameters
    ----------
    measurement : pandas.DataFrame or PhantomMeasurement
        Output of :func:`measure` (one row per sphere); several scans may be stacked, told
        apart by the ``site`` column.
    standard : {"EARL1", "EARL2", "all"} or list, default="EARL1"

    Returns
    -------
    pandas.DataFrame
        One row per site, standard, sphere and metric: ``site, standard, sphere_mm, metric,
        rc, lower, upper, passed, margin, verified, standard_version``.  ``margin`` is the
        distance to the nearer band edge in RC units (positive inside the band, negative
        outside); ``verified`` is False for limits the data file marks unverified (EARL2 PEAK).
        ``attrs["passed"]`` is the overall verdict over the verified limits.

    Examples
    --------
    >>> import pandas as pd
    >>> from sitekit.harmonize import earl
    >>> m = pd.DataFrame({"sphere_mm": [10, 13, 17, 22, 28, 37],
    ...                   "rc_max": [0.45, 0.72, 0.9, 0.98, 1.0, 1.0],
    ...                   "rc_a50": [0.35, 0.52, 0.65, 0.74, 0.79, 0.83]})
    >>> bool(earl.check(m, standard="EARL1")["passed"].all())
    True
    """
    df = getattr(measurement, "spheres", measurement)
    if not isinstance(df, pd.DataFrame):
        raise ValidationError(f"check needs the DataFrame returned by measure(); got {type(df).__name__}.")
    if "sphere_mm" not in df.columns:
        raise ValidationError("The measurement has no 'sphere_mm' column; pass the output of earl.measure().")
    df = df.copy()
    if "site" not in df.columns:
        df["site"] = "scan"
    rows = []
    for std in resolve_standards(standard):
        for metric in std.metrics:
            col = METRIC_COLUMNS[metric]
            if col not in df.columns:
                raise ValidationError(f"The measurement has no '{col}' column needed for {std.name} {metric}.")
            bands = std.bands[std.bands["metric"] == metric].set_index("sphere_mm")
            for r in df.itertuples(index=False):
                d = float(r.sphere_mm)
                if d not in bands.index:
                    continue
                b = bands.loc[d]
                rc = float(getattr(r, col))
                margin = min(rc - b["lower"], b["upper"] - rc)
                rows.append({"site": r.site, "standard": std.name, "sphere_mm": d, "metric": metric, "rc": rc,
                             "lower": float(b["lower"]), "upper": float(b["upper"]),
                             "passed": bool(np.isfinite(rc) and b["lower"] <= rc <= b["upper"]),
                             "margin": float(margin), "verified": bool(b["verified"]),
                             "standard_version": std.version})
    out = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    out = out.sort_values(["site", "standard", "metric", "sphere_mm"], kind="stable").reset_index(drop=True)
    out.attrs["passed"] = bool(out.loc[out["verified"], "passed"].all()) if len(out) else False
    return out


def verdict(check_result: pd.DataFrame) -> pd.DataFrame:
    """One row per site and standard: did it pass?

    Parameters
    ----------
    check_result : pandas.DataFrame
        Output of :func:`check`.

    Returns
    -------
    pandas.DataFrame
        ``site, standard, passed`` (all verified limits met), ``n_checks, n_failed,
        worst_margin, failed`` (e.g. ``"10 mm MAX; 13 mm A50"``) and ``unverified_failed``
        (failures of limits marked unverified, reported but not counted in ``passed``).
    """
    rows = []
    for (site, std), g in check_result.groupby(["site", "standard"], sort=True):
        ver = g[g["verified"]]
        failed = ver[~ver["passed"]]
        unv = g[~g["verified"] & ~g["passed"]]
        rows.append({
            "site": site, "standard": std, "passed": bool(ver["passed"].all()),
            "n_checks": int(len(ver)), "n_failed": int(len(failed)),
            "worst_margin": float(ver["margin"].min()) if len(ver) else np.nan,
            "failed": "; ".join(f"{r.sphere_mm:g} mm {r.metric}" for r in failed.itertuples()),
            "unverified_failed": "; ".join(f"{r.sphere_mm:g} mm {r.metric}" for r in unv.itertuples()),
        })
    return pd.DataFrame(rows, columns=["site", "standard", "passed", "n_checks", "n_failed", "worst_margin",
                                       "failed", "unverified_failed"])

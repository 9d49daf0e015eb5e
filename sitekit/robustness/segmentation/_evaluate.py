"""Cross-site evaluation of a segmenter over a manifest: tidy metrics, CIs, Bland-Altman, sweeps."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from sitekit._dask_session import dask_client
from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._validation import check_bool, check_number, check_random_state
from sitekit._version import __version__
from sitekit.exceptions import DataWarning, OutputExistsError, SitekitError, ValidationError
from sitekit.features._manifest import read_manifest
from sitekit.io import atomic_directory, read_image, read_table
from sitekit.robustness.models._threshold import bounding_region
from sitekit.robustness.segmentation._metrics import check_same_grid, segmentation_metrics
from sitekit.robustness.segmentation._sweeps import Sweep

__all__ = [
    "SegmentationEvaluation",
    "evaluate_segmentation",
    "evaluate_case",
    "bland_altman",
    "site_summary",
    "severity_curves",
    "crossing_severity",
    "METRIC_COLUMNS",
    "HIGHER_IS_BETTER",
]

#: Columns of the long metrics table.
METRIC_COLUMNS = ("subject_id", "site", "perturbation", "severity", "metric", "value")
#: Columns of the errors table.
ERROR_COLUMNS = ("subject_id", "site", "perturbation", "severity", "stage", "reason")
#: Metrics where a larger value is better (the worst site has the smallest mean).
HIGHER_IS_BETTER = frozenset({"dice", "surface_dice", "lesion_f1", "lesions_tp"})
#: Quantities compared predicted vs reference in :func:`bland_altman`.
BA_QUANTITIES = ("mtv", "tlg", "suvmax", "suvmean", "suvpeak")
RESULT_MARKER = "segmentation_evaluation.json"
_FORMAT = "sitekit-segmentation-evaluation"


# ------------------------------------------------------------------ one case
def _pair(row: Mapping, base_dir: Path) -> tuple[sitk.Image, sitk.Image]:
    def path(p):
        p = Path(str(p))
        return p if p.is_absolute() else base_dir / p

    image = sitk.Cast(read_image(path(row["image"])), sitk.sitkFloat32)
    mask = read_image(path(row["mask"]))
    return image, mask


def _predict(model, image: sitk.Image, ref: sitk.Image) -> sitk.Image:
    if getattr(model, "uses_region", False):
        return model.predict(image, region=bounding_region(ref, getattr(model, "margin_mm", 10.0)))
    return model.predict(image)


def evaluate_case(model, row: Mapping, base_dir: PathLike, sweeps: Sequence[Sweep] = (),
                  *, tolerance_mm: float = 2.0) -> dict:
    """Metrics of one manifest row, clean and under every sweep severity.

    Parameters
    ----------
    model : object with ``predict``
    row : mapping
        A manifest row (``subject_id``, ``site``, ``image``, ``mask``).
    base_dir : path-like
        Directory of relative paths.
    sweeps : sequence of Sweep
    tolerance_mm : float, default=2.0

    Returns
    -------
    dict
        ``{"subject_id", "rows": [...], "errors": [...]}`` with rows of the long table.
    """
    sid, site = str(row["subject_id"]), str(row["site"])
    rows: list[dict] = []
    errors: list[dict] = []
    try:
        image, ref = _pair(row, Path(base_dir))
        check_same_grid(image, ref, names=("image", "mask"))
    except SitekitError as exc:
        errors.append({"subject_id": sid, "site": site, "perturbation": "none", "severity": 0.0,
                       "stage": "read", "reason": str(exc)})
        return {"subject_id": sid, "rows": rows, "errors": errors}
    ref = sitk.Cast(ref != 0, sitk.sitkUInt8)
    ref_empty = not sitk.GetArrayViewFromImage(ref).any()

    def score(name: str, severity: float, img: sitk.Image, m: sitk.Image) -> None:
        pred = _predict(model, img, m)
        metrics = segmentation_metrics(pred, m, img, tolerance_mm=tolerance_mm)
        for k, v in metrics.items():
            if k == "ref_empty":
                continue
            rows.append({"subject_id": sid, "site": site, "perturbation": name,
                         "severity": float(severity), "metric": k, "value": float(v)})

    try:
        score("none", 0.0, image, ref)
    except SitekitError as exc:
        errors.append({"subject_id": sid, "site": site, "perturbation": "none", "severity": 0.0,
                       "stage": "predict", "reason": str(exc)})
        return {"subject_id": sid, "rows": rows, "errors": errors}
    for sweep in sweeps:
        sevs = ((sweep.severity_for(row),) if hasattr(sweep, "severity_for") else sweep.severities)
        for sev in sevs:
            stage = "perturbation"
            try:
                pert = sweep.build(sev, row)
                if pert is None:
                    img, m = image, ref
                else:
                    img, m, _ = pert(image, ref)
                if not ref_empty and not sitk.GetArrayViewFromImage(m).any():
                    raise ValidationError(
                        f"the reference lesion left the field of view under {sweep.name}={sev:g}; "
                        "use smaller shifts or a larger field of view"
                    )
                stage = "predict"
                score(sweep.name, sev, img, m)
            except SitekitError as exc:
                errors.append({"subject_id": sid, "site": site, "perturbation": sweep.name,
                               "severity": float(sev), "stage": stage, "reason": str(exc)})
    return {"subject_id": sid, "rows": rows, "errors": errors}


def _evaluate_chunk(model, rows, base_dir, sweeps, tolerance_mm) -> list[dict]:
    return [evaluate_case(model, r, base_dir, sweeps, tolerance_mm=tolerance_mm) for r in rows]


# ------------------------------------------------------------------ summaries
def _bootstrap_ci(values: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
                  level: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1 or n_bootstrap == 0:
        return float(v.mean()), float(v.mean())
    idx = rng.integers(0, v.size, size=(n_bootstrap, v.size))
    means = v[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def site_summary(metrics: pd.DataFrame, *, n_bootstrap: int = 1000, random_state=None) -> pd.DataFrame:
    """Per site (and overall), perturbation, severity and metric: mean with a bootstrap CI.

    Parameters
    ----------
    metrics : pandas.DataFrame
        The long table (:data:`METRIC_COLUMNS`).
    n_bootstrap : int, default=1000
        Resamples of the subjects (percentile 95 % interval of the mean).
    random_state : int, Generator or None

    Returns
    -------
    pandas.DataFrame
        Columns ``site`` (``"all"`` for the pooled row), ``perturbation``, ``severity``,
        ``metric``, ``n`` (finite values), ``mean``, ``sd``, ``ci_low``, ``ci_high``.
    """
    rng = check_random_state(random_state)
    out = []
    keys = ["perturbation", "severity", "metric"]
    pooled = metrics.assign(site="all")
    for (site, pert, sev, metric), g in pd.concat([metrics, pooled]).groupby(["site"] + keys, sort=True):
        v = g["value"].to_numpy(float)
        fin = v[np.isfinite(v)]
        lo, hi = _bootstrap_ci(v, n_bootstrap, rng)
        out.append({"site": site, "perturbation": pert, "severity": sev, "metric": metric,
                    "n": int(fin.size), "mean": float(fin.mean()) if fin.size else math.nan,
                    "sd": float(fin.std(ddof=1)) if fin.size > 1 else math.nan,
                    "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out, columns=["site", "perturbation", "severity", "metric", "n", "mean", "sd",
                                      "ci_low", "ci_high"])


def _worst_site(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    per_site = summary[(summary["site"] != "all") & (summary["n"] > 0)]
    for (pert, sev, metric), g in per_site.groupby(["perturbation", "severity", "metric"], sort=True):
        higher = metric in HIGHER_IS_BETTER
        i = g["mean"].idxmin() if higher else g["mean"].idxmax()
        rows.append({"perturbation": pert, "severity": sev, "metric": metric,
                     "worst_site": g.loc[i, "site"], "worst_mean": g.loc[i, "mean"],
                     "higher_is_better": higher})
    return pd.DataFrame(rows, columns=["perturbation", "severity", "metric", "worst_site", "worst_mean",
                                       "higher_is_better"])


def bland_altman(metrics: pd.DataFrame, *, quantities: Sequence[str] = BA_QUANTITIES) -> pd.DataFrame:
    """Bland-Altman agreement of predicted vs reference MTV, TLG and SUVs, per site.

    Parameters
    ----------
    metrics : pandas.DataFrame
        The long table; uses the ``<quantity>_pred`` / ``<quantity>_ref`` (``mtv_pred_ml``)
        metric pairs.
    quantities : sequence of str, default=("mtv", "tlg", "suvmax", "suvmean", "suvpeak")

    Returns
    -------
    pandas.DataFrame
        Columns ``site`` (``"all"`` pooled), ``perturbation``, ``severity``, ``quantity``,
        ``n``, ``bias`` (mean of pred - ref), ``sd``, ``loa_low``, ``loa_high`` (bias -+ 1.96
        SD), ``bias_percent`` (mean of 100 (pred - ref) / ref over cases with ref != 0).
    """
    wide = metrics.pivot_table(index=["subject_id", "site", "perturbation", "severity"],
                               columns="metric", values="value", aggfunc="first").reset_index()
    rows = []
    both = pd.concat([wide, wide.assign(site="all")])
    for q in quantities:
        p, r = (f"{q}_pred_ml", f"{q}_ref_ml") if q == "mtv" else (f"{q}_pred", f"{q}_ref")
        if p not in both.columns or r not in both.columns:
            continue
        for (site, pert, sev), g in both.groupby(["site", "perturbation", "severity"], sort=True):
            d = (g[p] - g[r]).to_numpy(float)
            ok = np.isfinite(d)
            d = d[ok]
            ref = g[r].to_numpy(float)[ok]
            n = d.size
            bias = float(d.mean()) if n else math.nan
            sd = float(d.std(ddof=1)) if n > 1 else math.nan
            rel = 100.0 * d[ref != 0] / ref[ref != 0]
            rows.append({"site": site, "perturbation": pert, "severity": sev, "quantity": q, "n": n,
                         "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
                         "bias_percent": float(rel.mean()) if rel.size else math.nan})
    return pd.DataFrame(rows, columns=["site", "perturbation", "severity", "quantity", "n", "bias", "sd",
                                       "loa_low", "loa_high", "bias_percent"])


def severity_curves(metrics: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean metric per site, perturbation and severity, with the clean value as reference.

    Parameters
    ----------
    metrics : pandas.DataFrame
        The long table.
    metric : str, default="dice"

    Returns
    -------
    pandas.DataFrame
        Columns ``site``, ``perturbation``, ``severity``, ``mean``, ``clean`` (the site's mean
        without perturbation), ``change`` (``mean - clean``), ``n``.
    """
    m = metrics[metrics["metric"] == metric]
    clean = m[m["perturbation"] == "none"].groupby("site")["value"].mean()
    g = (m[m["perturbation"] != "none"].groupby(["site", "perturbation", "severity"])["value"]
         .agg(["mean", "count"]).reset_index().rename(columns={"count": "n"}))
    g["clean"] = g["site"].map(clean)
    g["change"] = g["mean"] - g["clean"]
    return g[["site", "perturbation", "severity", "mean", "clean", "change", "n"]]


def crossing_severity(metrics: pd.DataFrame, metric: str = "dice", *, tolerance: float = 0.05) -> pd.DataFrame:
    """Severity at which a site's mean metric first moves more than ``tolerance`` from clean.

    Linear interpolation between the two severities that bracket the crossing (severities in
    increasing distance from the unperturbed value, i.e. by absolute value).

    Parameters
    ----------
    metrics : pandas.DataFrame
        The long table.
    metric : str, default="dice"
    tolerance : float, default=0.05
        Allowed absolute change of the site mean.

    Returns
    -------
    pandas.DataFrame
        Columns ``site``, ``perturbation``, ``metric``, ``tolerance``, ``crossed`` (bool),
        ``severity`` (NaN when the tolerance is never crossed within the sweep; see
        ``crossed``), ``max_change``.
    """
    check_number(tolerance, name="tolerance", owner="crossing_severity", low=0)
    curves = severity_curves(metrics, metric)
    rows = []
    for (site, pert), g in curves.groupby(["site", "perturbation"], sort=True):
        g = g.assign(order=g["severity"].abs()).sort_values("order")
        sev = np.concatenate([[0.0], g["severity"].to_numpy(float)])
        ch = np.concatenate([[0.0], g["change"].abs().to_numpy(float)])
        crossed, at = False, math.nan
        for i in range(1, len(sev)):
            if ch[i] > tolerance:
                crossed = True
                frac = (tolerance - ch[i - 1]) / (ch[i] - ch[i - 1]) if ch[i] != ch[i - 1] else 1.0
                at = float(sev[i - 1] + frac * (sev[i] - sev[i - 1]))
                break
        rows.append({"site": site, "perturbation": pert, "metric": metric, "tolerance": float(tolerance),
                     "crossed": crossed, "severity": at, "max_change": float(np.nanmax(ch))})
    return pd.DataFrame(rows, columns=["site", "perturbation", "metric", "tolerance", "crossed", "severity",
                                       "max_change"])


# ------------------------------------------------------------------ result
@dataclass
class SegmentationEvaluation:
    """Result of :func:`evaluate_segmentation`.

    Attributes
    ----------
    metrics : pandas.DataFrame
        Long table: ``subject_id, site, perturbation, severity, metric, value``
        (``perturbation="none"``, ``severity=0`` for the unperturbed cases).
    summary : pandas.DataFrame
        :func:`site_summary`: per-site means with bootstrap CIs.
    worst_site : pandas.DataFrame
        Per perturbation, severity and metric: the site with the worst mean.
    bland_altman : pandas.DataFrame
        :func:`bland_altman` per site.
    errors : pandas.DataFrame
        Cases (or case x perturbation) that could not be scored: ``subject_id, site,
        perturbation, severity, stage, reason``.
    params : dict
    """

    metrics: pd.DataFrame
    summary: pd.DataFrame
    worst_site: pd.DataFrame
    bland_altman: pd.DataFrame
    errors: pd.DataFrame
    params: dict = field(default_factory=dict)

    def curves(self, metric: str = "dice") -> pd.DataFrame:
        """:func:`severity_curves` of ``metric``."""
        return severity_curves(self.metrics, metric)

    def crossing(self, metric: str = "dice", *, tolerance: float = 0.05) -> pd.DataFrame:
        """:func:`crossing_severity` of ``metric``."""
        return crossing_severity(self.metrics, metric, tolerance=tolerance)

    def save(self, out: PathLike, *, force: bool = False) -> Path:
        """Write the tables (CSV) and ``segmentation_evaluation.json`` into the folder ``out`` atomically.

        Parameters
        ----------
        out : path-like
        force : bool, default=False

        Returns
        -------
        pathlib.Path
        """
        out = Path(out)
        with atomic_directory(out, force=force) as tmp:
            for name in ("metrics", "summary", "worst_site", "bland_altman", "errors"):
                getattr(self, name).to_csv(tmp / f"{name}.csv", index=False)
            (tmp / RESULT_MARKER).write_text(json.dumps(
                {"format": _FORMAT, "version": 1, "sitekit_version": __version__,
                 "params": to_jsonable(self.params)}, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: PathLike) -> SegmentationEvaluation:
        """Read a folder written by :meth:`save`.

        Parameters
        ----------
        path : path-like

        Returns
        -------
        SegmentationEvaluation
        """
        path = Path(path)
        meta = json.loads((path / RESULT_MARKER).read_text(encoding="utf-8"))
        tables = {n: read_table(path / f"{n}.csv", dtype={"subject_id": str, "site": str})
                  for n in ("metrics", "summary", "worst_site", "bland_altman", "errors")}
        return cls(**tables, params=meta.get("params", {}))


# ------------------------------------------------------------------ public function
def _part_key(subject_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", subject_id)[:40]
    return f"{safe}-{hashlib.sha1(subject_id.encode()).hexdigest()[:12]}"


def _run_dask(model, rows, base_dir, sweeps, tolerance_mm, on_result, *, workers, scheduler):
    """Evaluate the cases in chunks on a Dask cluster (the shared session helper)."""
    from distributed import as_completed

    with dask_client(scheduler=scheduler, workers=None if scheduler else workers,
                     timeout="20s") as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers or 1)
        size = int(max(1, min(4, len(rows) // (4 * n_workers))))
        remote_model = client.scatter(model, broadcast=True)
        futures = {}
        for i in range(0, len(rows), size):
            chunk = rows[i: i + size]
            fut = client.submit(_evaluate_chunk, remote_model, chunk, str(base_dir), sweeps,
                                tolerance_mm, pure=False)
            futures[fut] = chunk
        for fut in as_completed(list(futures)):
            try:
                results = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its cases only
                results = [{"subject_id": str(r["subject_id"]), "rows": [],
                            "errors": [{"subject_id": str(r["subject_id"]), "site": str(r["site"]),
                                        "perturbation": "none", "severity": 0.0, "stage": "worker",
                                        "reason": f"Dask worker failed: {type(exc).__name__}: {exc}"}]}
                           for r in futures[fut]]
            for res in results:
                on_result(res)


def evaluate_segmentation(
    model,
    manifest: PathLike | pd.DataFrame,
    *,
    perturbations: Sequence[Sweep] | None = None,
    base_dir: PathLike | None = None,
    n_bootstrap: int = 1000,
    random_state=None,
    workers: int | None = None,
    scheduler: str | None = None,
    out: PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    tolerance_mm: float = 2.0,
) -> SegmentationEvaluation:
    """Evaluate a segmenter on every case of a manifest, clean and under perturbation sweeps.

    Parameters
    ----------
    model : object with ``predict(image) -> mask``
        E.g. :class:`~sitekit.robustness.models.OnnxSegmenter`.  Models with
        ``uses_region = True`` (the threshold baselines) get the box around the reference
        grown by their ``margin_mm`` as bounding region.
    manifest : path-like or pandas.DataFrame
        The extraction manifest (``subject_id``, ``site``, ``image``, ``mask`` and optional
        covariates; paths relative to the manifest).
    perturbations : sequence of Sweep, optional
        Sweeps from :mod:`sitekit.robustness.segmentation` (``blur_sweep()`` ...); None = clean
        cases only.
    base_dir : path-like, optional
        Directory of relative paths (default: the manifest's).
    n_bootstrap : int, default=1000
        Bootstrap resamples for the per-site CIs.
    random_state : int, Generator or None
        Seeds the bootstrap.
    workers : int, optional
        Dask worker processes; None or 1 = in this process.
    scheduler : str, optional
        Address of a running Dask scheduler (overrides ``workers``).
    out : path-like, optional
        Folder to write the result to (atomically); progress is kept in ``<out>.parts/`` so
        an interrupted run continues with ``resume=True``.
    resume : bool, default=False
        Reuse the finished cases of an interrupted run with the same model, sweeps and manifest.
    force : bool, default=False
        Replace an existing ``out``.
    progress : callable, optional
        Called as ``progress(done, total, subject_id)`` after each case.
    tolerance_mm : float, default=2.0
        Surface-Dice tolerance.

    Returns
    -------
    SegmentationEvaluation

    Raises
    ------
    ValidationError
        A bad manifest or parameter.
    OutputExistsError
        ``out`` exists and neither ``force`` nor ``resume`` is given.

    Notes
    -----
    Cases that cannot be read, whose mask is on another grid than the image, or whose
    reference lesion leaves the field of view under a perturbation are listed in ``errors``
    (with a :class:`~sitekit.exceptions.DataWarning`) and left out of the summaries.  See
    :func:`segmentation_metrics` for the metric definitions and the empty-reference convention.

    Examples
    --------
    >>> from sitekit.datasets import load_sample_manifest
    >>> from sitekit.robustness import evaluate_segmentation
    >>> from sitekit.robustness.models import ThresholdSegmenter
    >>> ev = evaluate_segmentation(ThresholdSegmenter(0.41), load_sample_manifest(), n_bootstrap=200,
    ...                            random_state=0)
    >>> sorted(ev.metrics["site"].unique())
    ['site_A', 'site_B', 'site_C', 'site_D']
    """
    owner = "evaluate_segmentation"
    if not callable(getattr(model, "predict", None)):
        raise ValidationError(f"{owner} needs a model with a predict(image) method. Got {type(model).__name__}.")
    n_bootstrap = int(check_number(n_bootstrap, name="n_bootstrap", owner=owner, integer=True, low=0))
    resume = check_bool(resume, name="resume", owner=owner)
    sweeps = list(perturbations or [])
    for s in sweeps:
        if not isinstance(s, Sweep):
            raise ValidationError(f"The 'perturbations' of {owner} must be Sweep objects (blur_sweep() ...). "
                                  f"Got {type(s).__name__}.")
    names = [s.name for s in sweeps]
    if len(set(names)) != len(names):
        raise ValidationError(f"The sweeps of {owner} need distinct names. Got {names}.")
    if workers is not None:
        workers = int(check_number(workers, name="workers", owner=owner, integer=True, low=1))
    df, root = read_manifest(manifest, base_dir=base_dir)
    rows = df.to_dict("records")
    run_key = hashlib.sha256(json.dumps(
        {"model": repr(model), "sweeps": [(s.name, s.severities) for s in sweeps],
         "tolerance_mm": tolerance_mm}, default=str).encode()).hexdigest()[:16]
    parts = None
    done: dict[str, dict] = {}
    if out is not None:
        out = Path(out)
        if out.exists() and not force:
            if resume and (out / RESULT_MARKER).is_file():
                previous = SegmentationEvaluation.load(out)
                if previous.params.get("run_key") == run_key:
                    return previous  # finished before: nothing to resume
            raise OutputExistsError(f"Output '{out}' already exists; pass force=True (--force) to replace it.")
        parts = out.with_name(out.name + ".parts")
        if resume and parts.is_dir():
            for f in parts.glob("*.json"):
                try:
                    rec = json.loads(f.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a part cut short by the interruption: recompute it
                if rec.get("run_key") == run_key:
                    done[rec["subject_id"]] = rec
        parts.mkdir(parents=True, exist_ok=True)
    todo = [r for r in rows if str(r["subject_id"]) not in done]
    results: dict[str, dict] = dict(done)
    total = len(rows)

    def on_result(res: dict) -> None:
        results[res["subject_id"]] = res
        if parts is not None:
            rec = dict(res, run_key=run_key)
            tmp = parts / f".{_part_key(res['subject_id'])}.tmp"
            tmp.write_text(json.dumps(to_jsonable(rec, nonfinite="keep"), allow_nan=True), encoding="utf-8")
            os.replace(tmp, parts / f"{_part_key(res['subject_id'])}.json")
        if progress is not None:
            progress(len(results), total, res["subject_id"])

    if scheduler is not None or (workers or 1) > 1:
        _run_dask(model, todo, root, sweeps, tolerance_mm, on_result, workers=workers or 1, scheduler=scheduler)
    else:
        for r in todo:
            on_result(evaluate_case(model, r, root, sweeps, tolerance_mm=tolerance_mm))

    ordered = [results[str(r["subject_id"])] for r in rows if str(r["subject_id"]) in results]
    metrics = pd.DataFrame([x for res in ordered for x in res["rows"]], columns=list(METRIC_COLUMNS))
    errors = pd.DataFrame([e for res in ordered for e in res["errors"]], columns=list(ERROR_COLUMNS))
    metrics["value"] = metrics["value"].astype(float)
    metrics["severity"] = metrics["severity"].astype(float)
    if len(errors):
        warnings.warn(
            f"{owner}: {len(errors)} case/perturbation(s) could not be scored (first: "
            f"{errors.iloc[0]['subject_id']}: {errors.iloc[0]['reason']}); see the errors table.",
            DataWarning, stacklevel=2)
    summary = site_summary(metrics, n_bootstrap=n_bootstrap, random_state=random_state)
    result = SegmentationEvaluation(
        metrics=metrics, summary=summary, worst_site=_worst_site(summary),
        bland_altman=bland_altman(metrics), errors=errors,
        params={"model": repr(model), "sweeps": [{"name": s.name, "severities": list(s.severities),
                                                  "unit": s.unit} for s in sweeps],
                "n_bootstrap": n_bootstrap, "n_cases": total, "tolerance_mm": tolerance_mm,
                "run_key": run_key},
    )
    if out is not None:
        result.save(out, force=True)
        for f in parts.glob("*"):
            f.unlink()
        parts.rmdir()
    return result

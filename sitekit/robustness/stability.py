"""Feature robustness to image perturbations: the manifest -> perturb -> extract -> ICC pipeline.

:func:`feature_stability` perturbs every case of a manifest ``n`` times, re-extracts the
features and returns the per-feature ICC table (:func:`sitekit.robustness.icc.icc`) with a
robust flag (Zwanenburg et al., Sci Rep 2019: ICC(1,1) >= 0.90).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import numbers
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._validation import check_number, check_option
from sitekit._version import __version__
from sitekit.exceptions import DataWarning, ExtractionError, OutputExistsError, ValidationError
from sitekit.features import extract_case, load_params, params_hash
from sitekit.io import atomic_output, read_image, read_table
from sitekit.robustness.icc import ICC_FORMS, icc, koo_li_class
from sitekit.robustness.perturbations import (
    Perturbation,
    RandomPerturbation,
    load_perturbations,
    perturbation_from_config,
)

__all__ = ["feature_stability", "StabilityResult", "OUTPUT_FILES"]


# --------------------------------------------------------------------------------------------
# feature_stability
# --------------------------------------------------------------------------------------------
@dataclass
class StabilityResult:
    """Result of :func:`feature_stability`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per feature: ``feature``, ``icc``, ``ci_low``, ``ci_high``, ``koo_li``,
        ``robust``, ``F``, ``df1``, ``df2``, ``p_value``, ``n_subjects``, ``n_raters``, ``form``.
    records : list of dict
        One entry per perturbed copy: ``{"subject_id", "copy", "random_state", "steps"}`` where
        ``steps`` are the replayable perturbation records.
    values : pandas.DataFrame
        The extracted features, long: ``subject_id``, ``copy``, ``feature``, ``value``.
    settings : dict
        ``n``, ``form``, ``threshold``, ``confidence``, ``entropy`` (the root seed actually used,
        so a run with ``random_state=None`` can be repeated), ``perturbation`` (its config) and
        ``failures`` (number of copies whose extraction failed).
    """

    table: pd.DataFrame
    records: list[dict] = field(default_factory=list)
    values: pd.DataFrame | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def robust_features(self) -> list[str]:
        """Names of the features flagged robust."""
        return self.table.loc[self.table["robust"], "feature"].tolist()

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what ``summary.json`` holds)."""
        table = self.table
        counts = table["koo_li"].value_counts()
        return {
            "sitekit_version": __version__,
            **{k: v for k, v in self.settings.items() if k != "perturbation"},
            "n_features": int(len(table)),
            "n_robust": int(table["robust"].sum()),
            "robust_fraction": float(table["robust"].mean()) if len(table) else 0.0,
            "koo_li_counts": {c: int(counts.get(c, 0))
                              for c in ("excellent", "good", "moderate", "poor", "undefined")},
            "median_icc": float(table["icc"].median()) if table["icc"].notna().any() else None,
            "perturbation": self.settings.get("perturbation"),
        }

    def save(self, out_dir: PathLike, *, force: bool = False) -> dict[str, Path]:
        """Write the results into ``out_dir`` (created if needed), each file atomically.

        Files: ``stability.csv`` (:attr:`table`), ``robust_features.txt`` (one name a line),
        ``perturbations.jsonl`` (one record a line: ``subject_id``, ``copy``, ``random_state``,
        ``steps``) and ``summary.json`` (:meth:`summary`).

        Parameters
        ----------
        out_dir : path-like
        force : bool, default=False
            Replace existing files; without it an existing file raises
            :class:`~sitekit.exceptions.OutputExistsError` before anything is written.

        Returns
        -------
        dict of str to Path
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"Output '{out}' exists and is not a directory; choose a folder for --out.")
        paths = {name: out / name for name in OUTPUT_FILES}
        if not force:
            existing = [str(p) for p in paths.values() if p.exists()]
            if existing:
                raise OutputExistsError(
                    f"Output(s) {existing} already exist; pass --force (force=True) to replace them."
                )
        with atomic_output(paths["stability.csv"], force=force) as tmp:
            self.table.to_csv(tmp, index=False)
        with atomic_output(paths["robust_features.txt"], force=force) as tmp:
            tmp.write_text("".join(f"{f}\n" for f in self.robust_features), encoding="utf-8")
        with atomic_output(paths["perturbations.jsonl"], force=force) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in self.records:
                    fh.write(json.dumps(to_jsonable(rec)) + "\n")
        with atomic_output(paths["summary.json"], force=force) as tmp:
            tmp.write_text(json.dumps(to_jsonable(self.summary()), indent=2) + "\n",
                           encoding="utf-8")
        return paths


#: Files written by :meth:`StabilityResult.save`.
OUTPUT_FILES = ("stability.csv", "robust_features.txt", "perturbations.jsonl", "summary.json")


def _read_manifest(manifest, root) -> tuple[pd.DataFrame, Path]:
    if isinstance(manifest, pd.DataFrame):
        df = manifest.copy()
        base = Path(root) if root is not None else Path.cwd()
    else:
        path = Path(manifest)
        df = read_table(path)
        base = Path(root) if root is not None else path.parent
    need = ["subject_id", "image", "mask"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValidationError(
            f"The manifest has no column(s) {missing}; it needs {need} (paths relative to the "
            "manifest's folder)."
        )
    if df.empty:
        raise ValidationError("The manifest has no rows.")
    if df["subject_id"].duplicated().any():
        dup = df.loc[df["subject_id"].duplicated(), "subject_id"].iloc[0]
        raise ValidationError(f"The manifest repeats subject_id '{dup}'; give each case once.")
    if len(df) < 2:
        raise ValidationError("feature_stability needs at least 2 cases in the manifest (ICC is between-subject).")
    return df.reset_index(drop=True), base


def _resolve(base: Path, value) -> str:
    p = Path(str(value))
    return str(p if p.is_absolute() else base / p)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _case_job(subject_id, image_path: str, mask_path: str, config: dict, seeds: list[int],
              params: dict, label: int) -> tuple[list[dict | None], list[dict], list[str]]:
    """Perturb one case len(seeds) times and extract; runs in a worker process too."""
    image = read_image(image_path)
    mask_raw = read_image(mask_path)
    mask = sitk.Cast(mask_raw == label, sitk.sitkUInt8)
    mask.CopyInformation(mask_raw)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise ValidationError(
            f"Case '{subject_id}': the mask '{mask_path}' has no voxel with label {label}; "
            "fix the mask or pass the right label."
        )
    template = perturbation_from_config(config)
    feats: list[dict | None] = []
    recs: list[dict] = []
    errors: list[str] = []
    for j, seed in enumerate(seeds):
        pert = template.clone(random_state=seed) if isinstance(template, RandomPerturbation) else template
        try:
            img, m, steps = pert(image, mask)
        except ValidationError as exc:
            raise ValidationError(f"Case '{subject_id}' ({image_path}): {exc}") from exc
        recs.append({"subject_id": _plain(subject_id), "copy": j, "random_state": int(seed), "steps": steps})
        try:
            feats.append(extract_case(img, m, params=params, label=1))
        except ExtractionError as exc:
            feats.append(None)
            errors.append(f"{subject_id} copy {j}: {exc}")
    return feats, recs, errors


def feature_stability(
    manifest: PathLike | pd.DataFrame,
    perturbation,
    *,
    n: int = 20,
    params: PathLike | Mapping | None = None,
    form: str = "ICC(1,1)",
    threshold: float = 0.90,
    confidence: float = 0.95,
    random_state=None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    label: int | None = None,
    root: PathLike | None = None,
) -> StabilityResult:
    """Per-feature robustness to image perturbations (Zwanenburg et al. 2019).

    Every case of the manifest is perturbed ``n`` times (each copy with its own seed drawn from
    ``random_state``), the features of every copy are extracted with
    :func:`sitekit.features.extract_case`, and the ICC over the copies (raters) and cases
    (subjects) is computed per feature.

    Parameters
    ----------
    manifest : path-like or DataFrame
        Columns ``subject_id``, ``image``, ``mask`` (paths relative to the manifest's folder, or
        to ``root``); other columns (``site`` ...) are ignored.
    perturbation : Perturbation, str, path or dict
        A perturbation object (usually a random one or a :class:`Compose`), a chain name such as
        ``"NTCV"`` (see :func:`~sitekit.robustness.perturbations.get_chain`), a perturbation TOML
        file (``.toml``, see :func:`~sitekit.robustness.perturbations.load_perturbations`) or a
        configuration as parsed from one.  Its own ``random_state`` is replaced: copy ``j`` of
        case ``i`` is seeded from ``random_state`` (via ``SeedSequence(random_state).spawn``).
    n : int, default=20
        Perturbed copies per case (at least 2).
    params : path-like, dict or None, default=None
        pyradiomics parameters (see :func:`sitekit.features.load_params`); None uses the shipped
        PET default.
    form : str, default="ICC(1,1)"
        ICC form (see :func:`sitekit.robustness.icc.icc`).
    threshold : float, default=0.90
        A feature is robust when its ICC >= ``threshold``.
    confidence : float, default=0.95
        Level of the ICC confidence interval; its lower bound gives the Koo-Li class.
    random_state : int, Generator or None, default=None
        Root seed; the same value gives identical perturbed images and tables, whatever
        ``workers`` is.
    workers : int, default=1
        Processes; cases are distributed over them.
    progress : callable, optional
        Called with ``1`` after each case.
    label : int, optional
        Mask value of the region (default: the parameters' ``label`` setting, 1).
    root : path-like, optional
        Folder the manifest paths are relative to.

    Returns
    -------
    StabilityResult
        ``table`` (per feature), ``records`` (replayable perturbation records per copy),
        ``values`` (extracted features) and ``settings``.

    Warns
    -----
    DataWarning
        A perturbed copy could not be extracted (its case is left out of the ICC of every
        feature), or a feature has no variance.
    """
    n = int(check_number(n, name="n", owner="feature_stability", low=2, integer=True))
    workers = int(check_number(workers, name="workers", owner="feature_stability", low=1, integer=True))
    check_number(threshold, name="threshold", owner="feature_stability", low=-1, high=1)
    canonical = ICC_FORMS[check_option(form, list(ICC_FORMS), name="form", owner="feature_stability")]
    if isinstance(perturbation, Perturbation) and not isinstance(perturbation, RandomPerturbation):
        warnings.warn(
            f"{type(perturbation).__name__} is deterministic: every perturbed copy is identical and "
            "every varying feature gets ICC 1. Use its Random counterpart or a chain.",
            DataWarning,
            stacklevel=2,
        )
    if isinstance(perturbation, Perturbation):
        config = perturbation.to_config()
    elif isinstance(perturbation, Path) or (
        isinstance(perturbation, str) and perturbation.lower().endswith(".toml")
    ):
        config = load_perturbations(perturbation).to_config()
    else:
        config = perturbation_from_config(perturbation).to_config()
    perturbation_from_config(config)  # validates the whole chain before any work
    p = load_params(params)
    if label is None:
        label = p.get("setting", {}).get("label", 1)
    df, base = _read_manifest(manifest, root)

    if isinstance(random_state, np.random.Generator):
        entropy = int(random_state.integers(0, 2**63 - 1))
    elif random_state is None:
        entropy = int(np.random.SeedSequence().entropy)
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        entropy = int(random_state)
    else:
        raise ValidationError(
            f"The 'random_state' parameter must be None, an int or a numpy Generator. Got {random_state!r} instead."
        )
    case_seqs = np.random.SeedSequence(entropy).spawn(len(df))
    jobs = []
    for i, row in df.iterrows():
        seeds = [int(s.generate_state(1)[0]) for s in case_seqs[i].spawn(n)]
        jobs.append((row["subject_id"], _resolve(base, row["image"]), _resolve(base, row["mask"]),
                     config, seeds, p, int(label)))

    results: list = [None] * len(jobs)
    if workers == 1 or len(jobs) == 1:
        for i, job in enumerate(jobs):
            results[i] = _case_job(*job)
            if progress is not None:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                 mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_case_job, *job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(1)

    records: list[dict] = []
    rows: list[pd.DataFrame] = []
    errors: list[str] = []
    names: list[str] = []
    for (subject_id, *_), (feats, recs, errs) in zip(jobs, results):
        records.extend(recs)
        errors.extend(errs)
        for j, fd in enumerate(feats):
            if fd is None:
                continue
            for name in fd:
                if name not in names:
                    names.append(name)
            rows.append(pd.DataFrame({"subject_id": subject_id, "copy": j,
                                      "feature": list(fd), "value": list(fd.values())}))
    if errors:
        warnings.warn(
            f"{len(errors)} perturbed cop{'y' if len(errors) == 1 else 'ies'} could not be extracted "
            f"and their cases are left out of the ICC: {errors[:3]}{' ...' if len(errors) > 3 else ''}",
            DataWarning,
            stacklevel=2,
        )
    if not rows:
        raise ExtractionError(
            "No perturbed copy could be extracted; check the masks and the parameter file. "
            f"First error: {errors[0] if errors else 'none'}"
        )
    values = pd.concat(rows, ignore_index=True)
    # (subjects, copies, features) array; failed copies stay NaN and drop their case
    subj_codes = pd.Categorical(values["subject_id"], categories=df["subject_id"].tolist()).codes
    feat_codes = pd.Categorical(values["feature"], categories=names).codes
    arr = np.full((len(df), n, len(names)), np.nan)
    arr[subj_codes, values["copy"].to_numpy(), feat_codes] = values["value"].to_numpy(dtype=float)
    arr[~np.isfinite(arr)] = np.nan
    table = icc(arr, form=canonical, confidence=confidence, feature_names=names)
    table["koo_li"] = koo_li_class(table["ci_low"].to_numpy())
    table["robust"] = (table["icc"] >= threshold).fillna(False).astype(bool)
    table = table[["feature", "icc", "ci_low", "ci_high", "koo_li", "robust", "F", "df1", "df2",
                   "p_value", "n_subjects", "n_raters", "form"]]
    settings = {
        "n": n,
        "form": canonical,
        "threshold": float(threshold),
        "confidence": float(confidence),
        "entropy": entropy,
        "perturbation": config,
        "n_cases": len(df),
        "failures": len(errors),
        "manifest": None if isinstance(manifest, pd.DataFrame) else str(manifest),
        "params_hash": params_hash(p),
    }
    return StabilityResult(table=table, records=records, values=values, settings=settings)

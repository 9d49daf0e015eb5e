"""Extraction over a manifest: in-process or on Dask, per-case errors, resumable output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sitekit._dask_session import dask_client
from sitekit._typing import PathLike
from sitekit._validation import check_bool, check_number, check_option
from sitekit._version import __version__
from sitekit.exceptions import (
    CorruptFileError,
    DataWarning,
    ExtractionError,
    OutputExistsError,
    SitekitError,
    UnknownSiteError,
    ValidationError,
)
from sitekit.features._case import _label_of, pyradiomics_version, run_extractor
from sitekit.features._manifest import PROVENANCE_COLUMNS, read_manifest
from sitekit.features._params import load_params, params_hash
from sitekit.features._suv import to_suv_bw
from sitekit.harmonize.earl import apply_filter, read_calibration
from sitekit.io import (
    TABLE_SUFFIXES,
    atomic_output,
    check_writable,
    file_hash,
    read_image,
    read_table,
    remove_stale_temporaries,
    short_list,
    write_tables,
)

__all__ = ["extract", "output_paths", "ERROR_COLUMNS"]

#: Columns of the errors table.
ERROR_COLUMNS = ("subject_id", "site", "stage", "reason")

_PARTS_FORMAT = "sitekit-extract-parts"

#: Part files are flushed after this many seconds or this many finished cases.
FLUSH_SECONDS = 5.0
FLUSH_CASES = 500

#: Most cases in one Dask task (see :func:`chunk_size`).
MAX_CHUNK = 8

#: How long to try connecting to a Dask scheduler given by address.
SCHEDULER_TIMEOUT = "20s"


def output_paths(out: PathLike) -> tuple[Path, Path, Path]:
    """``(features, errors, parts directory)`` paths of an extraction output.

    ``features.parquet`` -> ``features.errors.csv`` and ``features.parquet.parts/``.
    """
    out = Path(out)
    name = out.name
    for suffix in TABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out, out.with_name(f"{name}.errors.csv"), out.with_name(f"{out.name}.parts")


def _part_key(subject_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", subject_id)[:40]
    return f"{safe}-{hashlib.sha1(subject_id.encode()).hexdigest()[:12]}"


# ------------------------------------------------------------------ one case (runs on workers)
def process_case(task: Mapping, params: dict) -> dict:
    """Read, pre-process and extract one manifest row; never raises.

    Returns ``{"subject_id", "ok": True, "values": {provenance..., features...}}`` or
    ``{"subject_id", "ok": False, "stage", "reason"}``.
    """
    sid = task["subject_id"]
    stage = "read"
    try:
        image = read_image(task["image"])
        mask = read_image(task["mask"])
        values: dict = {
            "sitekit_version": __version__,
            "pyradiomics_version": pyradiomics_version(),
            "params_hash": task["params_hash"],
            "image_hash": file_hash(task["image"]),
            "mask_hash": file_hash(task["mask"]),
            "label": int(task["label"]),
            "suv_conversion": task["suv"],
            "earl_fwhm_mm": np.nan if task["fwhm"] is None else float(task["fwhm"]),
        }
        if task["suv"] == "bw":
            stage = "suv"
            image = to_suv_bw(image)
        if task["fwhm"] is not None:
            stage = "filter"
            image = apply_filter(image, task["fwhm"])
        stage = "extract"
        values.update(run_extractor(image, mask, params, int(task["label"])))
    except ExtractionError as exc:
        return {"subject_id": sid, "ok": False, "stage": exc.stage, "reason": str(exc)}
    except SitekitError as exc:
        return {"subject_id": sid, "ok": False, "stage": stage, "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop a consortium run
        return {"subject_id": sid, "ok": False, "stage": stage,
                "reason": f"unexpected {type(exc).__name__}: {exc}"}
    return {"subject_id": sid, "ok": True, "values": values}


# ------------------------------------------------------------------ part files
class _Parts:
    """Finished cases as Parquet part files in ``<out>.parts/``, written in small batches.

    Results are buffered and flushed to a new ``ok-<n>.parquet`` (and ``err-<n>.json``) when
    :data:`FLUSH_SECONDS` have passed or :data:`FLUSH_CASES` results are waiting, and on any
    exit (including Ctrl-C).  A hard kill loses at most the last few seconds of work; a
    part file is never rewritten, so a resumed run leaves earlier parts untouched.
    """

    def __init__(self, directory: Path, phash: str) -> None:
        self.dir = directory
        self.phash = phash
        self._ok: list[dict] = []
        self._err: list[dict] = []
        self._last = time.monotonic()

    def start(self, *, resume: bool) -> None:
        meta = self.dir / "run.json"
        if resume and meta.exists():
            try:
                info = json.loads(meta.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CorruptFileError(f"'{meta}' is not valid JSON; delete '{self.dir}' and rerun.") from exc
            if info.get("format") != _PARTS_FORMAT or info.get("params_hash") != self.phash:
                raise ValidationError(
                    f"The interrupted run in '{self.dir}' used other parameters "
                    f"(hash {str(info.get('params_hash'))[:12]}... vs {self.phash[:12]}...); resume "
                    "with the same --params, or start over with --force and without --resume."
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp*"):  # temporaries of a killed flush
            stale.unlink(missing_ok=True)
        if not meta.exists():
            with atomic_output(meta, force=True) as tmp:
                tmp.write_text(json.dumps({"format": _PARTS_FORMAT, "version": 1,
                                           "params_hash": self.phash,
                                           "sitekit_version": __version__}))

    def add(self, result: dict) -> None:
        if result["ok"]:
            self._ok.append({"subject_id": result["subject_id"]} | result["values"])
        else:
            self._err.append({k: result[k] for k in ("subject_id", "stage", "reason")})
        if (len(self._ok) + len(self._err) >= FLUSH_CASES
                or time.monotonic() - self._last >= FLUSH_SECONDS):
            self.flush()

    def _name(self, prefix: str, suffix: str) -> Path:
        return self.dir / f"{prefix}-{time.time_ns():020d}-{os.getpid()}{suffix}"

    def flush(self) -> None:
        if self._ok:
            cols = list(dict.fromkeys(k for row in self._ok for k in row))
            table = pa.table({c: [row.get(c) for row in self._ok] for c in cols})
            with atomic_output(self._name("ok", ".parquet"), force=True) as tmp:
                pq.write_table(table, tmp)
            self._ok = []
        if self._err:
            with atomic_output(self._name("err", ".json"), force=True) as tmp:
                tmp.write_text(json.dumps(self._err))
            self._err = []
        self._last = time.monotonic()

    def done(self, ids: set[str]) -> dict[str, dict]:
        """Results of earlier runs for ``ids`` (subject_id -> values)."""
        out: dict[str, dict] = {}
        for p in sorted(self.dir.glob("ok-*.parquet")):
            try:
                rows = pq.read_table(p).to_pylist()
            except Exception:  # noqa: BLE001 - a damaged part is simply redone
                p.unlink(missing_ok=True)
                continue
            for row in rows:
                sid = str(row.pop("subject_id"))
                if sid in ids and row.get("params_hash") == self.phash:
                    out[sid] = {k: v for k, v in row.items() if v is not None}
        return out

    def clear_errors(self) -> None:
        for p in self.dir.glob("err-*.json"):
            p.unlink(missing_ok=True)


def _done_from_output(out: Path, phash: str, ids: set[str]) -> dict[str, dict]:
    """Rows of an existing features table for ``ids`` (computed columns only)."""
    df = read_table(out, text_columns=["subject_id", "site"])
    if "subject_id" not in df.columns or "sitekit_version" not in df.columns:
        raise ValidationError(
            f"'{out}' is not a sitekit features table (no subject_id/sitekit_version columns); "
            "choose another --out or pass --force without --resume."
        )
    hashes = set(df["params_hash"].dropna().astype(str))
    if hashes and hashes != {phash}:
        raise ValidationError(
            f"'{out}' was extracted with other parameters (params_hash {sorted(hashes)[0][:12]}... "
            f"vs {phash[:12]}...); resume with the same --params, or use --force without --resume."
        )
    computed = list(df.columns[df.columns.get_loc("sitekit_version"):])
    df = df.assign(subject_id=df["subject_id"].astype(str))
    df = df[df["subject_id"].isin(ids)]
    return {
        sid: {k: v for k, v in zip(computed, vals, strict=True)}
        for sid, vals in zip(df["subject_id"], df[computed].itertuples(index=False, name=None),
                             strict=True)
    }


# ------------------------------------------------------------------ runners
def _run_serial(tasks, params, on_result) -> None:
    for task in tasks:
        on_result(process_case(task, params))


def chunk_size(n_tasks: int, n_workers: int) -> int:
    """Cases per Dask task: up to :data:`MAX_CHUNK`, keeping >= 4 tasks per worker.

    A Dask task costs a few milliseconds of scheduling and serialisation, as much as a
    small lesion's extraction; a few cases per task amortise it while the queue stays long
    enough to balance the workers.
    """
    return int(max(1, min(MAX_CHUNK, n_tasks // (4 * max(1, n_workers)))))


def process_cases(tasks: list, params: dict) -> list[dict]:
    """:func:`process_case` over a chunk of cases (one Dask task)."""
    return [process_case(task, params) for task in tasks]


def _run_dask(tasks, params, on_result, *, workers: int, scheduler: str | None) -> None:
    from distributed import as_completed

    with dask_client(scheduler=scheduler, workers=None if scheduler else workers,
                     timeout=SCHEDULER_TIMEOUT) as client:
        if not tasks:
            return
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        size = chunk_size(len(tasks), n_workers)
        futures = {}
        for i in range(0, len(tasks), size):
            chunk = tasks[i : i + size]
            fut = client.submit(process_cases, chunk, params, pure=False,
                                key=f"sitekit-extract-{_part_key(chunk[0]['subject_id'])}-{id(chunk)}")
            futures[fut] = chunk
        for fut in as_completed(list(futures)):
            try:
                results = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its cases only
                results = [{"subject_id": t["subject_id"], "ok": False, "stage": "extract",
                            "reason": f"Dask worker failed: {type(exc).__name__}: {exc}"}
                           for t in futures[fut]]
            for result in results:
                on_result(result)


# ------------------------------------------------------------------ public function
def extract(
    manifest: PathLike | pd.DataFrame,
    *,
    base_dir: PathLike | None = None,
    params: PathLike | Mapping | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    out: PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    suv: str | None = None,
    earl_calibration: PathLike | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract pyradiomics features for every case of a manifest.

    Each case is read, checked (image/mask geometry, empty mask, label present), optionally
    converted to body-weight SUV and post-filtered with its site's EARL harmonising filter,
    and passed to pyradiomics.  A case that fails is recorded in the errors table and the run
    continues.

    Parameters
    ----------
    manifest : str, path-like or pandas.DataFrame
        CSV/TSV with one row per case: ``subject_id``, ``site``, ``image``, ``mask`` (paths
        relative to the manifest), optional ``label_value`` and ``suv``; other columns are
        passed through.  See :func:`read_manifest`.
    base_dir : str or path-like, optional
        Directory that relative paths start from (default: the manifest's directory; the
        current directory for a DataFrame).
    params : str, path-like, dict or None, default=None
        pyradiomics parameters (file or dict), validated by pyradiomics' schema; None uses
        the shipped PET default (2 mm isotropic, bin width 0.25 SUV).
    workers : int, default=1
        1 runs in this process; N > 1 starts a local Dask cluster of N single-threaded
        worker processes.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to use instead; the
        workers must see the image paths (shared file system).
    out : str or path-like, optional
        Features table to write (``.parquet``; ``.csv``/``.tsv`` also work).  Finished
        cases are flushed to Parquet part files in ``<out>.parts/`` every few seconds (and
        on Ctrl-C or any error), then consolidated into ``out`` at the end (the parts
        directory is then removed); errors go to ``<out stem>.errors.csv``.  Both files are
        written in full to temporary files before either is renamed into place, so a killed
        run leaves the earlier pair (and its parts for ``resume``); temporary files of a
        run killed while writing are removed by the next run.  None keeps everything in
        memory.
    resume : bool, default=False
        Continue an interrupted (or extend a finished) run: cases already in ``out`` or in
        ``<out>.parts/`` are not extracted again; failed cases are retried.  Needs ``out``
        and the same parameters.  A case is kept only while it still answers its manifest
        row: when the image or mask file changed (SHA-256, so the files are read once more),
        or the label, SUV conversion or EARL filter did, it is extracted again and a
        :class:`~sitekit.exceptions.DataWarning` names it.
    force : bool, default=False
        Replace an existing output (and discard the parts of an interrupted run).
    suv : {"bw"}, optional
        Convert every image to body-weight SUV from its DICOM header (the image must be a
        PET DICOM series directory); a manifest column ``suv`` sets it per row.
    earl_calibration : str or path-like, optional
        ``calibration.json`` (or its directory) of ``sitekit earl calibrate``: each image is
        Gaussian-filtered with its site's chosen FWHM before extraction.
    progress : callable, optional
        Called as ``progress(n)`` when ``n`` more cases are finished (done earlier, extracted
        or failed); the manifest's row count is the total.

    Returns
    -------
    features : pandas.DataFrame
        One row per extracted case in manifest order: the manifest's columns, then the
        provenance columns ``sitekit_version``, ``pyradiomics_version``, ``params_hash``
        (SHA-256 of the validated parameters), ``image_hash``, ``mask_hash`` (SHA-256 of
        the files), ``label``, ``suv_conversion`` (``"bw"`` or ``"none"``), ``earl_fwhm_mm`` (NaN if
        no filter), then the features named as pyradiomics names them
        (``original_firstorder_Mean`` ...).  pyradiomics' ``diagnostics_*`` entries are
        dropped.
    errors : pandas.DataFrame
        Columns ``subject_id``, ``site``, ``stage`` (``read``, ``check``, ``suv``,
        ``filter``, ``extract``) and ``reason``; one row per failed case.

    Raises
    ------
    ValidationError
        Bad manifest, parameters or options; ``resume`` with other parameters.
    UnknownSiteError
        A manifest site missing from the EARL calibration.
    OutputExistsError
        ``out``, its errors file or an interrupted run's parts exist and neither
        ``force`` nor ``resume`` is given.

    Examples
    --------
    >>> from sitekit.features import extract
    >>> features, errors = extract("sample_data/cohort/manifest.csv",
    ...                            out="features.parquet")  # doctest: +SKIP
    """
    df, root = read_manifest(manifest, base_dir=base_dir)
    p = load_params(params)
    phash = params_hash(p)
    workers = check_number(workers, name="workers", owner="extract", low=1, integer=True)
    resume = check_bool(resume, name="resume", owner="extract")
    force = check_bool(force, name="force", owner="extract")
    if scheduler is not None and workers > 1:
        raise ValidationError(
            "Give either 'workers' (a local Dask cluster) or 'scheduler' (an existing one), not both."
        )
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValidationError(f"The 'scheduler' parameter must be an address string. Got {scheduler!r}.")
    if suv is not None:
        suv = check_option(suv, ["bw", "none"], name="suv", owner="extract")
    if progress is not None and not callable(progress):
        raise ValidationError("The 'progress' parameter must be callable (progress(n)) or None.")

    fwhm: dict[str, float] = {}
    if earl_calibration is not None:
        fwhm = read_calibration(earl_calibration)
        missing = sorted(set(df["site"]) - set(fwhm))
        if missing:
            raise UnknownSiteError(
                f"The EARL calibration '{earl_calibration}' has no filter for site(s) "
                f"{', '.join(repr(s) for s in missing)} (it has {', '.join(sorted(fwhm))}); "
                "calibrate those sites or drop the calibration."
            )

    # ---- outputs and resume state
    parts = None
    done: dict[str, dict] = {}
    ids = list(df["subject_id"])
    if out is None:
        if resume:
            raise ValidationError("'resume' needs 'out' (the features table of the run to resume).")
    else:
        out_path, err_path, parts_dir = output_paths(out)
        if out_path.suffix.lower() not in TABLE_SUFFIXES:
            raise ValidationError(
                f"Output '{out_path}' has an unknown suffix; use .parquet (or .csv, .tsv)."
            )
        check_writable(out_path)
        if isinstance(manifest, str | Path) and Path(manifest).resolve() in (
            out_path.resolve(), err_path.resolve()
        ):
            raise OutputExistsError(f"Output '{out_path}' would overwrite the manifest; choose another --out.")
        if not resume and not force:
            for path in (out_path, err_path):
                if path.exists():
                    raise OutputExistsError(
                        f"Output '{path}' already exists; pass --force (force=True) to replace it, or "
                        "--resume (resume=True) to extract only the cases not in it yet."
                    )
            if parts_dir.exists():
                raise OutputExistsError(
                    f"An interrupted run left '{parts_dir}'; pass --resume (resume=True) to continue "
                    "it, or --force (force=True) to start over."
                )
        if force and not resume and parts_dir.exists():
            shutil.rmtree(parts_dir)
        remove_stale_temporaries(out_path)  # left by a run killed while writing
        remove_stale_temporaries(err_path)
        if resume and out_path.exists():  # checked before anything is written
            done.update(_done_from_output(out_path, phash, set(ids)))
        parts = _Parts(parts_dir, phash)
        parts.start(resume=resume)
        if resume:
            done.update(parts.done({i for i in ids if i not in done}))
            parts.clear_errors()

    # ---- tasks
    default_label = _label_of(p, None)
    all_tasks = []
    for r in df.to_dict("records"):
        label = r.get("label_value")
        row_suv = suv or "none"
        if "suv" in r and isinstance(r["suv"], str) and r["suv"].strip():
            row_suv = r["suv"].strip().lower()
        all_tasks.append({
            "subject_id": r["subject_id"],
            "image": str(root / r["image"]),
            "mask": str(root / r["mask"]),
            "label": default_label if label is None or pd.isna(label) else int(label),
            "suv": row_suv,
            "fwhm": fwhm.get(r["site"]),
            "params_hash": phash,
        })
    if done:
        changed = [t["subject_id"] for t in all_tasks
                   if t["subject_id"] in done and not _still_valid(done[t["subject_id"]], t)]
        for sid in changed:
            del done[sid]
        if changed:
            warnings.warn(
                f"Resume: {len(changed)} case(s) changed since they were extracted (image or "
                f"mask file, label, SUV or EARL filter): {short_list(changed)}; extracting "
                "them again.", DataWarning, stacklevel=2)
    tasks = [t for t in all_tasks if t["subject_id"] not in done]
    if progress is not None and done:
        progress(len(done))

    results: dict[str, dict] = {}

    def on_result(result: dict) -> None:
        results[result["subject_id"]] = result
        if parts is not None:
            parts.add(result)
        if progress is not None:
            progress(1)

    try:
        if not tasks:
            pass
        elif scheduler is None and workers == 1:
            _run_serial(tasks, p, on_result)
        else:
            _run_dask(tasks, p, on_result, workers=workers, scheduler=scheduler)
    except BaseException:
        if parts is not None:  # keep what is done, also on Ctrl-C
            parts.flush()
        raise

    # ---- consolidate
    computed = dict(done)
    computed.update({sid: r["values"] for sid, r in results.items() if r["ok"]})
    features = _assemble(df, computed)
    site_of = dict(zip(df["subject_id"], df["site"], strict=True))
    err_rows = [
        {"subject_id": sid, "site": site_of[sid], "stage": results[sid]["stage"],
         "reason": results[sid]["reason"]}
        for sid in ids if sid in results and not results[sid]["ok"]
    ]
    errors = pd.DataFrame(err_rows, columns=list(ERROR_COLUMNS))
    if out is not None:
        # both files are written in full first, then renamed (errors, then features); the
        # parts are removed last, so a run killed in between is completed by --resume
        write_tables({err_path: errors, out_path: features}, force=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(parts_dir)
    return features, errors


def _still_valid(values: Mapping, task: Mapping) -> bool:
    """Whether a case extracted earlier still answers ``task``: same image and mask bytes
    (SHA-256), same label, SUV conversion and EARL filter."""
    try:
        if values.get("image_hash") != file_hash(task["image"]):
            return False
        if values.get("mask_hash") != file_hash(task["mask"]):
            return False
    except (SitekitError, OSError):
        return False  # the file is gone or unreadable: extract again (and report it)
    old_fwhm = values.get("earl_fwhm_mm")
    old_fwhm = None if old_fwhm is None or pd.isna(old_fwhm) else float(old_fwhm)
    new_fwhm = None if task["fwhm"] is None else float(task["fwhm"])
    label = values.get("label")
    return (label is not None and not pd.isna(label) and int(label) == int(task["label"])
            and str(values.get("suv_conversion")) == str(task["suv"])
            and old_fwhm == new_fwhm)


def _assemble(df: pd.DataFrame, computed: dict[str, dict]) -> pd.DataFrame:
    """Manifest columns + provenance + features for the computed cases, in manifest order."""
    keep = df[df["subject_id"].isin(computed)].reset_index(drop=True)
    rows = [computed[sid] for sid in keep["subject_id"]]
    feature_cols = [k for k in dict.fromkeys(k for row in rows for k in row)
                    if k not in PROVENANCE_COLUMNS]
    prov = pd.DataFrame.from_records(rows, columns=list(PROVENANCE_COLUMNS))
    prov = prov.astype({"earl_fwhm_mm": "float64", "label": "Int64"})
    values = np.array([[row.get(c, np.nan) for c in feature_cols] for row in rows], dtype=np.float64)
    feats = pd.DataFrame(values.reshape(len(rows), len(feature_cols)), columns=feature_cols)
    return pd.concat([keep, prov, feats], axis=1)

"""Writing and loading the shipped sample data (``sample_data/``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

import sitekit
from sitekit._typing import PathLike
from sitekit.datasets._cohort import make_cohort
from sitekit.datasets._features import make_feature_table
from sitekit.datasets._phantom import make_phantom_scan
from sitekit.datasets._profiles import SITE_PROFILES
from sitekit.exceptions import MissingFileError, OutputExistsError
from sitekit.io import read_table, write_image

__all__ = [
    "generate_sample_data",
    "sample_data_dir",
    "load_sample_features",
    "load_sample_manifest",
    "summarize_sample_data",
]

#: Sample phantom field of view: the sphere plane +-40 mm (keeps the files small).
SAMPLE_PHANTOM_FOV_MM = (320.0, 280.0, 80.0)
SAMPLE_PHANTOM_FOV_CENTRE = (0.0, 15.0, 0.0)


def sample_data_dir() -> Path:
    """The ``sample_data/`` folder of the source tree sitekit runs from."""
    return Path(sitekit.__file__).resolve().parents[1] / "sample_data"


def _require(path: Path) -> Path:
    if not path.exists():
        raise MissingFileError(
            f"Sample data file '{path}' is missing; run `sitekit datasets generate --out {path.parent}`."
        )
    return path


def load_sample_features() -> pd.DataFrame:
    """The shipped multi-site feature table (``sample_data/features.csv``)."""
    df = read_table(_require(sample_data_dir() / "features.csv"))
    df["sex"] = pd.Categorical(df["sex"], categories=["F", "M"])
    return df


def load_sample_manifest() -> Path:
    """Path of the shipped cohort manifest (``sample_data/cohort/manifest.csv``)."""
    return _require(sample_data_dir() / "cohort" / "manifest.csv")


def _to_uint16(image: sitk.Image) -> sitk.Image:
    a = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), 0, 65535).astype(np.uint16)
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(image)
    return out


def generate_sample_data(
    out: PathLike,
    *,
    seed: int = 0,
    n_per_site: int = 8,
    force: bool = False,
    phantoms: bool = True,
    cohort: bool = True,
    features: bool = True,
) -> dict:
    """Write the sample data set: phantoms per site, a small cohort, a feature table.

    Layout of ``out``::

        phantoms/<site>.nii.gz        NEMA/IEC phantom, Bq/mL (uint16), sphere plane +-40 mm
        phantoms/<site>_fill.json     fill description (activities, volumes, times)
        phantoms/truth.csv            true sphere centres and concentrations per site
        cohort/<site>/<id>_image.nii.gz, <id>_mask.nii.gz   SUV image (float32), mask (uint8)
        cohort/manifest.csv           subject_id, site, image, mask, age, sex, grade, outcome
        cohort/truth.csv              lesion truth (radius, SUV, necrosis, background)
        features.csv                  make_feature_table: 4 sites, 270 subjects, 30 features
        profiles.json                 the site profiles used

    The whole set is written to a temporary folder and moved into place, so an interrupted
    run leaves nothing behind.

    Parameters
    ----------
    out : path-like
    seed : int, default=0
    n_per_site : int, default=8
        Cohort cases per site.
    force : bool, default=False
        Replace an existing, non-empty ``out``.
    phantoms, cohort, features : bool, default=True
        Which parts to write.

    Returns
    -------
    dict
        Paths written and a summary.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"Output folder '{out}' is not empty; pass --force (force=True) to replace it.")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**32, 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    summary: dict = {"seed": seed, "sitekit_version": sitekit.__version__}
    try:
        if phantoms:
            (tmp / "phantoms").mkdir()
            truths = []
            for i, (name, prof) in enumerate(SITE_PROFILES.items()):
                scan = make_phantom_scan(prof, fov_mm=SAMPLE_PHANTOM_FOV_MM, fov_centre=SAMPLE_PHANTOM_FOV_CENTRE,
                                         random_state=int(seeds[0]) + i)
                write_image(_to_uint16(scan.image), tmp / "phantoms" / f"{name}.nii.gz")
                scan.fill.to_json(tmp / "phantoms" / f"{name}_fill.json")
                truths.append(scan.truth.assign(site=name))
            pd.concat(truths).to_csv(tmp / "phantoms" / "truth.csv", index=False)
            summary["phantoms"] = list(SITE_PROFILES)
        if cohort:
            coh = make_cohort(n_per_site=n_per_site, random_state=int(seeds[1]))
            rows = []
            for case in coh.cases:
                d = tmp / "cohort" / case.site
                d.mkdir(parents=True, exist_ok=True)
                img = f"{case.site}/{case.subject_id}_image.nii.gz"
                msk = f"{case.site}/{case.subject_id}_mask.nii.gz"
                write_image(case.image, tmp / "cohort" / img)
                write_image(case.mask, tmp / "cohort" / msk)
                rows.append({"subject_id": case.subject_id, "image": img, "mask": msk})
            tab = coh.table
            manifest = pd.DataFrame(rows).merge(tab[["subject_id", "site", "age", "sex", "grade", "outcome"]])
            manifest = manifest[["subject_id", "site", "image", "mask", "age", "sex", "grade", "outcome"]]
            manifest.to_csv(tmp / "cohort" / "manifest.csv", index=False)
            tab.to_csv(tmp / "cohort" / "truth.csv", index=False)
            summary["cohort_cases"] = len(coh.cases)
        if features:
            make_feature_table(random_state=int(seeds[2])).to_csv(tmp / "features.csv", index=False)
            summary["features"] = "features.csv"
        (tmp / "profiles.json").write_text(json.dumps({k: p.to_dict() for k, p in SITE_PROFILES.items()}, indent=2))
        if out.exists():
            keep = out.with_name(f".{out.name}.old")
            shutil.rmtree(keep, ignore_errors=True)
            out.rename(keep)
            tmp.rename(out)
            # keep hand-written files (README.md, suite/) of an existing folder
            for extra in keep.iterdir():
                if not (out / extra.name).exists():
                    extra.rename(out / extra.name)
            shutil.rmtree(keep, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["out"] = str(out)
    return summary


def summarize_sample_data(path: PathLike | None = None) -> pd.DataFrame:
    """Per-site summary of a sample-data folder.

    Parameters
    ----------
    path : path-like, optional
        Default: the shipped ``sample_data/``.

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site``, ``phantom`` (file name or empty), ``phantom_voxel_mm``,
        ``cohort_cases``, ``feature_rows``, ``outcome_rate`` (feature table).
    """
    root = Path(path) if path is not None else sample_data_dir()
    if not root.exists():
        raise MissingFileError(f"Sample data folder '{root}' does not exist; run `sitekit datasets generate`.")
    manifest = root / "cohort" / "manifest.csv"
    man = read_table(manifest) if manifest.exists() else pd.DataFrame(columns=["site"])
    feat_path = root / "features.csv"
    feats = read_table(feat_path) if feat_path.exists() else pd.DataFrame(columns=["site", "outcome"])
    sites = sorted(set(man["site"]) | set(feats["site"]) | {p.name.removesuffix(".nii.gz")
                   for p in (root / "phantoms").glob("*.nii.gz")})
    rows = []
    for s in sites:
        ph = root / "phantoms" / f"{s}.nii.gz"
        spacing = ""
        if ph.exists():
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(ph))
            reader.ReadImageInformation()
            spacing = " x ".join(f"{v:g}" for v in reader.GetSpacing())
        f = feats[feats["site"] == s]
        rows.append({
            "site": s,
            "phantom": ph.name if ph.exists() else "",
            "phantom_voxel_mm": spacing,
            "cohort_cases": int((man["site"] == s).sum()),
            "feature_rows": len(f),
            "outcome_rate": float(f["outcome"].mean()) if len(f) else float("nan"),
        })
    return pd.DataFrame(rows)

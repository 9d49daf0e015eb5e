"""``build_report``: result folders -> sections -> :class:`Report`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from sitekit._typing import PathLike
from sitekit.exceptions import ModelFileError
from sitekit.harmonize import ComBat, CovBat, NestedComBat, read_diagnostics
from sitekit.harmonize import load as load_model
from sitekit.io import file_hash, read_table
from sitekit.reports import sections as S
from sitekit.reports._results import ResultFolder, collect_provenance, discover_results
from sitekit.reports.html import Report, Section, Verdict

__all__ = ["build_report", "load_section"]

_ORDER = {"earl": 0, "extract": 1, "stability": 2, "harmonize": 3, "suite": 4,
          "segmentation": 5, "monitor": 6}  # the chain's order


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _first(folder: ResultFolder, *names: str) -> Path | None:
    for n in names:
        p = folder.path / n
        if p.exists():
            return p
    return None


# --------------------------------------------------------------------------------- EARL
def _earl(folders: list[ResultFolder], show_ids: bool) -> Section:
    """One EARL section from every EARL folder (checks labelled by folder when several)."""
    checks, curves, measurements = [], [], []
    calibration: dict = {}
    inputs: dict = {}
    previews: dict = {}
    n_checks = sum((f.path / "check.csv").exists() for f in folders)
    for folder in folders:
        p = _first(folder, "check.csv")
        if p is not None:
            chk = read_table(p)
            if "rc" in chk.columns:
                if n_checks > 1:
                    chk.insert(0, "run", folder.path.name)
                checks.append(chk)
            for png in sorted(folder.path.glob("spheres_*.png")):
                site = png.stem.removeprefix("spheres_")
                label = f"{site} ({folder.path.name})" if n_checks > 1 else site
                previews[label] = png.read_bytes()
        cp = _first(folder, "calibration.json")
        if cp is not None:
            d = _json(cp)
            for site, entry in (d.get("sites") or {}).items():
                e = dict(entry)
                e.setdefault("standard", d.get("standard", ""))
                calibration[str(site)] = e
        cv = _first(folder, "curves.csv")
        if cv is not None:
            c = read_table(cv)
            if not {"fwhm_mm", "sphere_mm", "rc"} - set(c.columns):
                curves.append(c)
        meas = _first(folder, "measurements.csv")
        if meas is not None:
            measurements.append(read_table(meas))
        vj = _first(folder, "verdict.json")
        if vj is not None:
            for scan in _json(vj).get("scans") or []:
                if scan.get("sha256"):
                    inputs[f"{folder.path.name}: phantom {scan.get('site')} "
                           f"({Path(str(scan.get('path'))).name})"] = "sha256:" + str(scan["sha256"])
    versions = sorted({str(v) for c in checks for v in c.get("standard_version", pd.Series()).dropna()})
    sec = S.earl_section(pd.concat(checks, ignore_index=True) if checks else None,
                          calibration=calibration or None,
                          curves=pd.concat(curves, ignore_index=True) if curves else None,
                          measurements=pd.concat(measurements, ignore_index=True)
                          if measurements else None, previews=previews or None)
    sec.results["inputs"] = inputs
    if versions:
        sec.results["params"] = {"standards": "; ".join(versions)}
    return sec


# ------------------------------------------------------------------------ harmonisation
def _harmonize(folder: ResultFolder, show_ids: bool) -> Section:
    diag_path = folder.meta.get("diagnostics")
    if diag_path is None and (folder.path / "diagnostics.json").exists():
        diag_path = folder.path / "diagnostics.json"
    diag = read_diagnostics(diag_path) if diag_path is not None else {}
    outputs = diag.get("outputs") or {}
    model_path = folder.path / outputs["model"] if outputs.get("model") else \
        next((p for p in folder.files if p.suffix == ".npz"), None)
    priors = pd.DataFrame(diag["priors"]) if diag.get("priors") else None
    gamma_hat = (diag.get("estimates") or {}).get("gamma_hat")
    delta_hat = (diag.get("estimates") or {}).get("delta_hat")
    params = diag.get("params")
    features = [str(f) for f in diag.get("features") or []]
    incomplete = [k for k, h in (diag.get("outputs_sha256") or {}).items()
                  if h is not None and (not (folder.path / outputs.get(k, "")).exists()
                                        or file_hash(folder.path / outputs[k]) != h)]
    if model_path is not None and model_path.exists() and (priors is None or gamma_hat is None
                                                            or not features):
        try:
            model = load_model(model_path)
        except ModelFileError:
            model = None
        if isinstance(model, CovBat):
            model = model.combat_
        elif isinstance(model, NestedComBat):
            model = model.steps_[0]
        if isinstance(model, ComBat):
            priors = model.priors_ if priors is None else priors
            gamma_hat = model.gamma_hat_ if gamma_hat is None else gamma_hat
            delta_hat = model.delta_hat_ if delta_hat is None else delta_hat
            params = params or model.get_params()
            names = getattr(model, "feature_names_in_", None)
            features = features or ([] if names is None else [str(f) for f in names])
    tables = [p for p in folder.files if p.suffix in (".csv", ".tsv", ".parquet")]
    after_path = folder.path / outputs["table"] if outputs.get("table") and \
        (folder.path / outputs["table"]).exists() else next(
            (p for p in tables if "harmoni" in p.stem.lower()), None)
    before_path = None
    inp = diag.get("input")
    if isinstance(inp, str):
        for cand in (Path(inp), folder.path / inp, folder.path / Path(inp).name):
            if cand.exists():
                before_path = cand
                break
    if before_path is None:
        before_path = next((p for p in tables if p.stem.lower() in {"input", "before", "raw"}), None)
    if after_path is None or before_path is None:
        sec = Section(S.harmonization.ID, S.harmonization.TITLE)
        sec.add_text(f"The input or harmonised table of '{folder.path.name}' was not found "
                     f"(input: {inp!r}); only the fitted priors are shown.", "warning")
        if priors is not None:
            sec.add_table(priors, "Empirical-Bayes priors per site.")
        sec.results = {"priors": priors}
        return sec
    before = read_table(before_path)
    after = read_table(after_path)
    if len(before) != len(after):
        raise ValueError(f"'{before_path.name}' and '{after_path.name}' have different row counts.")
    site_col = diag.get("site_col") or next(
        (c for c in ("site", "Site", "batch") if c in after.columns), None)
    if site_col is None or site_col not in after.columns:
        raise ValueError(f"No site column in '{after_path.name}'.")
    feats = [f for f in features if f in before.columns and f in after.columns] or [
        c for c in after.columns if c in before.columns and c != site_col
        and pd.api.types.is_float_dtype(after[c])]
    covs = [str(c) for c in diag.get("covariates") or [] if str(c) in before.columns]
    params = {k: v for k, v in (params or {}).items() if v is not None}
    if "input" in diag:
        params = {"input": Path(str(diag["input"])).name, **params}
    sec = S.harmonization_section(before[feats], after[feats], after[site_col].to_numpy(),
                                  covariates=before[covs] if covs else None, priors=priors, gamma_hat=gamma_hat,
                                  delta_hat=delta_hat, params=params)
    if incomplete:
        sec.add_text(f"The result set of '{Path(str(diag_path)).name}' is incomplete or changed: "
                     f"{', '.join(incomplete)} no longer match the checksums recorded by the run. "
                     "Run 'sitekit harmonize run' again.", "warning")
        sec.verdicts.append(Verdict("Harmonisation result set", "WARN",
                                    f"{', '.join(incomplete)} changed since the run"))
    now = file_hash(before_path)
    recorded = diag.get("input_sha256")
    sec.results["inputs"] = {f"harmonisation input ({before_path.name})":
                             "sha256:" + str(recorded or now)}
    if recorded and recorded != now:
        sec.add_text(f"The input table '{before_path.name}' changed after the harmonisation run "
                     "(its SHA-256 differs from the one recorded); the before/after statistics "
                     "may not describe that run.", "warning")
        sec.verdicts.append(Verdict("Harmonisation input", "WARN",
                                    "input table changed since the run"))
    return sec


# --------------------------------------------------------------------------- extraction
def _extract(folder: ResultFolder, show_ids: bool) -> Section:
    pq = next(p for p in folder.files if p.suffix == ".parquet")
    features = read_table(pq)
    err = next((p for p in folder.files if "error" in p.name and p.suffix in (".csv", ".tsv", ".parquet")), None)
    errors = read_table(err) if err is not None and err.stat().st_size > 0 else None
    sec = S.extraction_section(features, errors, show_ids=show_ids)
    prov = sec.results.get("provenance") or {}
    if prov:
        sec.results["params"] = dict(prov)
    return sec


# ----------------------------------------------------------------------- stability
def _stability_frames(folders: list[ResultFolder]):
    frames, robust, summaries = [], [], {}
    for f in folders:
        st = read_table(f.path / "stability.csv")
        summary = _json(f.path / "summary.json") if (f.path / "summary.json").exists() else {}
        if "perturbation" not in st.columns:
            name = summary.get("perturbation") or summary.get("chain") or f.path.name
            st["perturbation"] = name if isinstance(name, str) else f.path.name
        frames.append(st)
        rf = f.path / "robust_features.txt"
        if rf.exists():
            robust.append({ln.strip() for ln in rf.read_text().splitlines() if ln.strip()})
        if summary:
            summaries[f.path.name] = summary
    st = pd.concat(frames, ignore_index=True)
    rob = sorted(set.intersection(*robust)) if robust and len(robust) == len(folders) else None
    return st, rob, summaries


def _stability(folders: list[ResultFolder], show_ids: bool) -> Section:
    st, rob, summaries = _stability_frames(folders)
    threshold = 0.9
    for s in summaries.values():
        if isinstance(s.get("threshold"), int | float):
            threshold = float(s["threshold"])
    return S.stability_section(st, threshold=threshold, robust=rob, summary=summaries or None)


# ---------------------------------------------------------------------------- suite
def _suite_parts(folder: ResultFolder) -> dict:
    res = folder.meta.get("results") or _json(folder.path / "results.json")
    checks = res.get("checks")
    checks = pd.DataFrame(checks) if checks is not None else None
    verdict = res.get("verdict")
    if isinstance(verdict, bool):
        verdict = "pass" if verdict else "fail"

    def table(*names):
        p = _first(folder, *names)
        return read_table(p) if p is not None else None

    scoring = (res.get("summary") or {}).get("scoring")
    model = res.get("model") or {}
    settings = res.get("settings") or {}
    data = res.get("data") or {}
    folder.meta["params"] = {
        "model": f"{model.get('spec') or model.get('file')} {model.get('params') or ''} "
                 f"harmonize={model.get('harmonize')}",
        "settings": ", ".join(f"{k}={v}" for k, v in settings.items() if not isinstance(v, dict)),
    }
    folder.meta["inputs"] = {}
    if data.get("sha256"):
        folder.meta["inputs"][f"suite table ({Path(str(data.get('table'))).name})"] = (
            "sha256:" + str(data["sha256"]))
    if (res.get("suite") or {}).get("sha256"):
        folder.meta["inputs"][f"suite file ({Path(str(res['suite'].get('path') or folder.path.name)).name})"] = "sha256:" + res["suite"]["sha256"]
    return {"checks": checks, "verdict": verdict, "loso": table("loso.csv"),
            "stress": table("stress.csv"), "adversarial": table("adversarial.csv"),
            "site_predictability": table("site_predictability.csv"),
            "calibration_curve": table("calibration_curve.csv"), "scoring": scoring,
            "noise_unit": str((settings.get("stress") or {}).get("noise_unit") or "sd"),
            "harmonize": (res.get("model") or {}).get("harmonize")}


def _suite(folder: ResultFolder, show_ids: bool) -> Section:
    return _suites([folder], show_ids)[0]


def _suites(folders: list[ResultFolder], show_ids: bool) -> list[Section]:
    """One section per suite; the LOSO forest compares the suites' models side by side."""
    parts = [_suite_parts(f) for f in folders]
    if len(folders) > 1 and all(p["loso"] is not None for p in parts):
        names = []
        for f, p in zip(folders, parts):
            h = p["harmonize"]
            names.append(f.path.name + (f" ({'ComBat' if h == 'combat' else 'no harmonisation'})"
                                        if h is not None else ""))
        merged = pd.concat([p["loso"].assign(model=n) for p, n in zip(parts, names)],
                           ignore_index=True)
        for p in parts:
            p["loso"] = merged
    out = []
    for i, (f, p) in enumerate(zip(folders, parts)):
        p.pop("harmonize")
        title = "Model robustness suite" + (f": {f.path.name}" if len(folders) > 1 else "")
        sec = S.suite_section(show_ids=show_ids, title=title,
                              section_id="model_robustness" + (f"_{i + 1}" if i else ""),
                              **{**p, "loso": p["loso"] if i == 0 else None})
        sec.results["params"] = f.meta.get("params", {})
        sec.results["inputs"] = f.meta.get("inputs", {})
        out.append(sec)
    return out


def _segmentation(folder: ResultFolder, show_ids: bool) -> Section:
    return S.build_section("segmentation", {"path": folder.path})


def _monitor(folder: ResultFolder, show_ids: bool) -> Section:
    return S.build_section("monitor", {"path": folder.path})


_LOADERS = {"harmonize": _harmonize, "extract": _extract, "suite": _suite,
            "segmentation": _segmentation, "monitor": _monitor}


def load_section(folder: ResultFolder, *, show_ids: bool = False) -> Section:
    """Build the section of one recognised result folder."""
    if folder.kind == "stability":
        return _stability([folder], show_ids)
    if folder.kind == "earl":
        return _earl([folder], show_ids)
    return _LOADERS[folder.kind](folder, show_ids)


def build_report(results_dir: PathLike, *, show_ids: bool = False, title: str | None = None,
                 command_line: str | None = None) -> Report:
    """Build the report of every sitekit result folder under ``results_dir``.

    Parameters
    ----------
    results_dir : str or path-like
        The output folder of one sitekit command, or a folder holding several (as
        ``sitekit demo`` writes).
    show_ids : bool, default=False
        Show subject identifiers (hidden by default).
    title : str, default=None
    command_line : str, default=None
        Recorded in the Provenance section.

    Returns
    -------
    Report
        Sections in the order of the chain: EARL, extraction, feature robustness,
        harmonisation, model robustness; a section that cannot be built becomes a warning in
        the report.
    """
    folders = discover_results(results_dir)
    sections: list[Section] = []
    problems: list[str] = []
    grouped = ("earl", "stability", "suite")
    items: list[tuple[str, object]] = [(f.kind, f) for f in folders if f.kind not in grouped]
    for kind in grouped:
        group = [f for f in folders if f.kind == kind]
        if group:
            items.append((kind, group))
    items.sort(key=lambda kv: _ORDER[kv[0]])
    for kind, obj in items:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if kind == "stability":
                    secs = [_stability(obj, show_ids)]
                elif kind == "earl":
                    secs = [_earl(obj, show_ids)]
                elif kind == "suite":
                    secs = _suites(obj, show_ids)
                else:
                    secs = [load_section(obj, show_ids=show_ids)]
            for w in caught:
                if issubclass(w.category, UserWarning) and "sitekit" in type(w.message).__module__:
                    secs[0].add_text(f"Warning: {w.message}", "warning")
        except Exception as exc:  # noqa: BLE001 - one bad folder must not hide the others
            where = obj[0].path if isinstance(obj, list) else obj.path
            problems.append(f"The {kind} results in '{Path(where).name}' could not be read: "
                            f"{type(exc).__name__}: {exc}")
            continue
        sections.extend(secs)
    prov = collect_provenance(folders, command_line=command_line,
                              extra={"results_dir": Path(results_dir).name,
                                     "subject_ids_shown": show_ids})
    params, inputs = {}, {}
    for sec in sections:
        p = sec.results.get("params") if isinstance(sec.results, dict) else None
        if p:
            params[sec.id] = "; ".join(f"{k}={v}" for k, v in p.items())
        inputs.update(sec.results.get("inputs") or {})
    if params:
        prov["parameters"] = params
    if inputs:
        prov["inputs"] = inputs
    report = Report(title or "sitekit report", sections, provenance=prov, warnings=problems)
    return report

"""The feature-extraction section: cases per site, features per case, provenance, per-case errors."""

from __future__ import annotations

import pandas as pd

from sitekit.reports.html import Section, Verdict
from sitekit.reports.sections._common import ID_COLUMNS, drop_ids, keyword_build

__all__ = ["ID", "TITLE", "build", "extraction_section"]

#: The section id (HTML anchor, JSON key) and title.
ID = "extraction"
TITLE = "Feature extraction"


def extraction_section(features: pd.DataFrame | None, errors: pd.DataFrame | None, *,
                       show_ids: bool = False) -> Section:
    """The extraction section: cases per site, feature count, per-case errors.

    Parameters
    ----------
    features : DataFrame
        One row per case (``site``, provenance and feature columns).
    errors : DataFrame
        ``subject_id, stage, reason`` (ids hidden unless ``show_ids``).
    """
    sec = Section(ID, TITLE,
                  intro="Radiomics features extracted with pyradiomics, one row per case.")
    results: dict = {}
    if features is not None:
        prov_cols = [c for c in features.columns if str(c).startswith(("sitekit_", "pyradiomics_",
                                                                         "params_", "provenance"))]
        feat_cols = [c for c in features.columns if str(c).startswith(("original_", "wavelet", "log-",
                                                                         "square", "exponential",
                                                                         "gradient", "lbp"))]
        per_site = (features.groupby("site").size().rename("n_cases").reset_index()
                    if "site" in features.columns else pd.DataFrame())
        if len(per_site) and "earl_fwhm_mm" in features.columns:
            fw = features.groupby("site")["earl_fwhm_mm"].first().reset_index()
            per_site = per_site.merge(fw, on="site", how="left")
        sec.add_text(f"{len(features)} cases extracted, {len(feat_cols)} features per case.")
        if len(per_site):
            sec.add_table(per_site, "Cases extracted per site.")
        prov = {}
        for c in prov_cols:
            if str(c).lower() in ID_COLUMNS or c.endswith("_hash") and "param" not in c:
                continue
            vals = pd.unique(features[c].astype(str))
            prov[c] = ", ".join(vals[:3]) + (" ..." if len(vals) > 3 else "")
        if prov:
            sec.add_table(pd.DataFrame({"column": list(prov), "value": list(prov.values())}),
                          "Provenance recorded with every row.")
        results.update({"n_cases": len(features), "n_features": len(feat_cols),
                        "per_site": per_site, "provenance": prov})
    if errors is not None and len(errors):
        shown = drop_ids(errors, show_ids)
        sec.add_table(shown, f"{len(errors)} case(s) could not be extracted.")
        sec.verdicts.append(Verdict("Extraction", "WARN", f"{len(errors)} case(s) failed; see the errors table"))
        results["errors"] = shown
    else:
        results["errors"] = []
    sec.results = results
    return sec


build = keyword_build(extraction_section, "``features``, ``errors``, ``show_ids``")

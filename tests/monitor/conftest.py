import numpy as np
import pandas as pd
import pytest

from sitekit.harmonize.earl import load_standard

LOG_FEATURES = ["lesion_suvmax", "lesion_suvmean", "mtv_ml", "glcm_contrast",
                "glrlm_short_run_emphasis", "ngtdm_coarseness"]


def log_features(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The stream with log-features (the scale ComBat is fitted on in these tests)."""
    out = df.copy()
    names = []
    for f in LOG_FEATURES:
        out[f"log_{f}"] = np.log(out[f])
        names.append(f"log_{f}")
    return out, names


def phantom_series(*, random_state, n_reference=8, n_drift=12, drift=0.02, sd=0.015,
                   standard="EARL1"):
    """Quarterly EARL results per sphere: stable at the band centre, then drifting down."""
    rng = np.random.default_rng(random_state)
    bands = load_standard(standard).bands
    rows = []
    n = n_reference + n_drift
    for q in range(n):
        factor = 1.0 - drift * max(0, q - n_reference + 1)
        for _, b in bands.iterrows():
            centre = 0.5 * (b["lower"] + b["upper"])
            rows.append({"site": "site_A", "time": q, "sphere_mm": b["sphere_mm"],
                         "metric": b["metric"], "rc": centre * factor * (1 + sd * rng.standard_normal()),
                         "lower": b["lower"], "upper": b["upper"]})
    return pd.DataFrame(rows)


@pytest.fixture
def stream_factory():
    from sitekit.datasets import make_study_stream

    def make(**kw):
        return make_study_stream(return_events=True, **kw)

    return make

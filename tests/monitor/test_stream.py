"""The study stream: reproducible, with the changes where and when it says."""

import numpy as np
import pandas as pd
import pytest

from sitekit.datasets import STREAM_SIGNALS, make_study_stream
from sitekit.datasets._stream import _sphere_profile
from sitekit.exceptions import ValidationError


def test_reproducible_and_columns():
    a = make_study_stream(random_state=3, n_months=4, reference_months=2, drift_month=2,
                          replacement_month=2)
    b = make_study_stream(random_state=3, n_months=4, reference_months=2, drift_month=2,
                          replacement_month=2)
    pd.testing.assert_frame_equal(a, b)
    assert set(STREAM_SIGNALS) <= set(a.columns)
    assert a["time"].is_monotonic_increasing


def test_sphere_profile_matches_closed_form_centre():
    # the centre of a blurred sphere: erf(R/(sqrt2 s)) - sqrt(2/pi) (R/s) exp(-R^2/(2 s^2))
    from scipy.special import erf

    R, s = 5.0, 3.0
    expected = erf(R / (np.sqrt(2) * s)) - np.sqrt(2 / np.pi) * (R / s) * np.exp(-R**2 / (2 * s**2))
    assert _sphere_profile(np.array([0.0]), R, s)[0] == pytest.approx(expected, rel=1e-4)


def test_drift_and_replacement_where_and_when():
    df, ev = make_study_stream(random_state=0, studies_per_month=60, drift=0.05,
                               return_events=True)
    liver = np.log(df["liver_suvmean"])
    c = df["site"] == "site_C"
    before, after = c & (df["time"] < ev["drift"]["start"]), c & (df["time"] >= ev["drift"]["start"])
    assert liver[after].mean() - liver[before].mean() == pytest.approx(np.log(1.05), abs=0.015)
    assert liver[before].std() == pytest.approx(0.10, abs=0.015)  # per-study CV 10 %
    b = df["site"] == "site_B"
    new = b & (df["time"] >= ev["replacement"]["start"])
    assert set(df.loc[new, "scanner"]) == {"site_A (new)"}
    # sharper PSF + smaller voxels: higher SUVmax and a different 41 % volume
    assert df.loc[new, "lesion_suvmax"].median() > 1.1 * df.loc[b & ~new, "lesion_suvmax"].median()
    a = df["site"] == "site_A"
    assert liver[a].groupby(df["time"] >= ev["drift"]["start"]).mean().diff().abs().iloc[-1] < 0.02


def test_bad_parameters():
    with pytest.raises(ValidationError, match="drift_site"):
        make_study_stream(drift_site="nowhere")
    with pytest.raises(ValidationError, match="drift_shape"):
        make_study_stream(drift_shape="jump")


def test_many_sites():
    df = make_study_stream(sites=10, n_months=2, reference_months=1, drift_month=1,
                           replacement_month=1, random_state=0)
    assert df["site"].nunique() == 10

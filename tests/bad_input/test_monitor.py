"""Bad input to the monitor: one row per mistake, the error class and words it must name."""

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import MissingFileError, UnknownSiteError, ValidationError
from sitekit.monitor import Signal, SiteMonitor

rng = np.random.default_rng(0)
REF = pd.DataFrame({"suv": rng.normal(2.0, 0.2, 80), "score": rng.uniform(0.1, 0.9, 80)})
REF_SITES = np.repeat(["a", "b"], 40)


def _fitted(**kw):
    return SiteMonitor(signals=["suv", "score"], **kw).fit(REF, sites=REF_SITES)


def _new(n=5, **cols):
    df = pd.DataFrame({"suv": rng.normal(2.0, 0.2, n), "score": rng.uniform(0.1, 0.9, n)})
    for k, v in cols.items():
        df[k] = v
    return df


FIT_CASES = [
    ("signal missing in reference", dict(signals=["suv", "nope"]), REF, REF_SITES,
     ValidationError, ["nope", "not in the table"]),
    ("reference too small", dict(signals=["suv"], min_reference=50), REF, REF_SITES,
     ValidationError, ["'a'", "min_reference=50"]),
    ("constant signal", dict(signals=["c"]), REF.assign(c=1.0), REF_SITES,
     ValidationError, ["'c'", "does not vary"]),
    ("window too small", dict(signals=["suv"], window=3), REF, REF_SITES,
     ValidationError, ["window", ">= 10"]),
    ("unknown chart", dict(signals=["suv"], chart="cusmu"), REF, REF_SITES,
     ValidationError, ["chart", "Did you mean 'cusum'"]),
    ("arl0 too small", dict(signals=["suv"], arl0=1), REF, REF_SITES,
     ValidationError, ["arl0"]),
    ("signals not a list", dict(signals="suv"), REF, REF_SITES, ValidationError, ["signals"]),
    ("non-numeric signal", dict(signals=["s"]), REF.assign(s="x"), REF_SITES,
     ValidationError, ["'s'", "not numeric"]),
    ("log of negative values", dict(signals=[Signal("neg", transform="log")]),
     REF.assign(neg=-1.0 + rng.normal(size=80)), REF_SITES, ValidationError, ["neg", "log"]),
    ("sites of other length", dict(signals=["suv"]), REF, REF_SITES[:10], ValidationError,
     ["sites", "10 entries"]),
    ("not a DataFrame", dict(signals=["suv"]), REF.to_numpy(), REF_SITES, ValidationError,
     ["DataFrame"]),
]


@pytest.mark.parametrize("case,params,X,sites,error,words", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_bad_input(case, params, X, sites, error, words):
    with pytest.raises(error) as exc:
        SiteMonitor(**params).fit(X, sites=sites)
    for w in words:
        assert w in str(exc.value), (case, str(exc.value))


def test_unknown_site_in_new_data():
    mon = _fitted()
    with pytest.raises(UnknownSiteError, match=r"\['z'\].*not in the reference"):
        mon.update(_new(3), sites=["a", "z", "a"])


def test_signal_missing_in_new_data():
    mon = _fitted()
    with pytest.raises(ValidationError, match="score"):
        mon.update(_new(3).drop(columns="score"), sites=["a"] * 3)


def test_times_out_of_order_across_updates():
    mon = _fitted()
    mon.update(_new(3), sites=["a"] * 3, times=[10, 11, 12])
    with pytest.raises(ValidationError, match=r"site 'a' has a study at time 5.0 before"):
        mon.update(_new(2), sites=["a", "a"], times=[5, 13])
    # the failed update changed nothing: the next valid one starts where the last ended
    assert mon.n_seen_.tolist() == [3, 0]
    mon.update(_new(2), sites=["a", "a"], times=[12, 13])
    assert mon.n_seen_.tolist() == [5, 0]


def test_times_unsorted_within_a_batch_are_sorted():
    """Documented behaviour: a batch may be unsorted; it is charted in time order."""
    mon1, mon2 = _fitted(), _fitted()
    new = _new(6)
    mon1.update(new, sites=["a"] * 6, times=[3, 1, 2, 6, 5, 4])
    order = np.argsort([3, 1, 2, 6, 5, 4])
    mon2.update(new.iloc[order], sites=["a"] * 6, times=np.sort([3, 1, 2, 6, 5, 4]))
    pd.testing.assert_frame_equal(mon1.history_, mon2.history_)


def test_mixed_time_kinds():
    mon = _fitted()
    mon.update(_new(2), sites=["a", "a"], times=[1, 2])
    with pytest.raises(ValidationError, match="dates"):
        mon.update(_new(1), sites=["a"], times=pd.to_datetime(["2026-01-01"]))


def test_missing_times():
    with pytest.raises(ValidationError, match="missing"):
        _fitted().update(_new(2), sites=["a", "a"], times=[1.0, np.nan])


def test_nan_signal_is_skipped_not_charted():
    """Documented behaviour: NaN = not measured; that chart skips the study."""
    mon = _fitted()
    mon.update(_new(3, score=[0.5, np.nan, 0.4]), sites=["a"] * 3, times=[1, 2, 3])
    counts = mon.history_.groupby("signal").size().to_dict()
    assert counts == {"score": 2, "suv": 3}


def test_window_smaller_than_batch_is_buffered():
    """Documented behaviour: an incomplete batch-effect window waits for more studies."""
    from sitekit.harmonize import ComBat

    X = pd.DataFrame({"f1": rng.normal(size=80), "f2": rng.normal(size=80)})
    model = ComBat().fit(X, sites=REF_SITES)
    mon = SiteMonitor(signals=["suv"], harmonizer=model, window=20).fit(REF.join(X),
                                                                       sites=REF_SITES)
    new = _new(10).join(pd.DataFrame({"f1": rng.normal(3, 1, 10), "f2": rng.normal(3, 1, 10)}))
    assert not (mon.update(new, sites=["a"] * 10)["signal"] == "harmonization").any()
    out = mon.update(new, sites=["a"] * 10)
    assert (out["signal"] == "harmonization").sum() == 1


def test_harmonizer_without_the_site():
    from sitekit.harmonize import ComBat

    X = pd.DataFrame({"f1": rng.normal(size=80), "f2": rng.normal(size=80) * 2})
    model = ComBat().fit(X, sites=np.repeat(["a", "c"], 40))
    with pytest.raises(UnknownSiteError, match="site_map"):
        SiteMonitor(signals=["suv"], harmonizer=model).fit(REF.join(X), sites=REF_SITES)


def test_load_missing_state(tmp_path):
    with pytest.raises(MissingFileError, match="sitekit monitor init"):
        SiteMonitor.load(tmp_path / "nothing")


def test_update_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SiteMonitor(signals=["suv"]).update(_new(1), sites=["a"])

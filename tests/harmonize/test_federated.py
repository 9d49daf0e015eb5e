"""Federated ComBat (library level): equals pooled ComBat; privacy guards; validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scale_data import assert_close, blank_cells, make_cohort

from sitekit.exceptions import (
    ConfoundingError,
    ModelFileError,
    PrivacyError,
    ProtocolError,
    TamperedModelError,
    ValidationError,
)
from sitekit.harmonize import federated as fed
from sitekit.harmonize._combat import ComBat
from sitekit.harmonize._persistence import write_model_file


def _split(X, sites, cov):
    for s in pd.unique(sites):
        m = sites == s
        yield X[m].reset_index(drop=True), sites[m], cov[m].reset_index(drop=True)


def _run(X, sites, cov, tmp_path=None, **options):
    """The whole protocol through files (when tmp_path is given)."""
    parts = list(_split(X, sites, cov))

    def ship(obj, name):
        if tmp_path is None:
            return obj
        path = tmp_path / name
        obj.save(path, force=True)
        return fed.load_federated(path)

    round1 = [ship(fed.summarize_site(x, sites=s, covariates=c), f"{s[0]}_1.npz") for x, s, c in parts]
    message = ship(fed.combine(round1, **options), "msg1.npz")
    round2 = [
        ship(fed.summarize_site(x, sites=s, covariates=c, message=message), f"{s[0]}_2.npz")
        for x, s, c in parts
    ]
    model = fed.combine(round2, message=message)
    if tmp_path is not None:
        model.save(tmp_path / "model.npz", force=True)
        model = ComBat.load(tmp_path / "model.npz")
    return model


@pytest.mark.parametrize(
    "params",
    [{}, {"parametric": False}, {"ref_site": "C"}, {"mean_only": True}, {"eb": False}],
    ids=lambda p: ",".join(p) or "default",
)
def test_federated_equals_pooled(tmp_path, params):
    X, sites, cov = make_cohort(seed=11)
    X = blank_cells(X, sites, cov, seed=11)  # missing cells that respect min_cell_size=5
    assert X.isna().any().any()
    expected = ComBat(**params).fit_transform(X, sites=sites, covariates=cov)
    model = _run(X, sites, cov, tmp_path, **params)
    assert model.get_params()["parametric"] == params.get("parametric", True)
    assert_close(model.transform(X, sites=sites, covariates=cov), expected, rel=1e-10)
    # the fitted state, not only the output, is the pooled one (guards the shared finish step)
    pooled = ComBat(**params).fit(X, sites=sites, covariates=cov)
    np.testing.assert_array_equal(model.adjusted_, pooled.adjusted_)
    np.testing.assert_array_equal(model.n_per_site_, pooled.n_per_site_)
    for name in ("grand_mean_", "var_pooled_", "gamma_star_", "delta_star_", "beta_"):
        np.testing.assert_allclose(getattr(model, name), getattr(pooled, name), rtol=1e-9, atol=1e-12)
    pd.testing.assert_frame_equal(model.priors_, pooled.priors_, rtol=1e-9, check_dtype=False)


def test_categorical_level_absent_at_one_site():
    X, sites, cov = make_cohort(seed=12)
    pairs = {"A": ("old", "mid"), "B": ("mid", "new"), "C": ("old", "new"), "D": ("mid", "new")}
    odd = np.arange(len(sites)) % 2
    cov["scanner"] = [pairs[s][k] for s, k in zip(sites, odd)]  # "old" absent at B and D
    expected = ComBat().fit_transform(X, sites=sites, covariates=cov)
    model = _run(X, sites, cov)
    assert model.covariate_encoding_ == ComBat().fit(X, sites=sites, covariates=cov).covariate_encoding_
    assert_close(model.transform(X, sites=sites, covariates=cov), expected, rel=1e-10)


def test_no_summary_array_has_a_sample_sized_axis(tmp_path):
    X, sites, cov = make_cohort(n_per_site=(23, 31, 17), seed=13)
    X = blank_cells(X, sites, cov, seed=13)
    parts = list(_split(X, sites, cov))
    r1 = [fed.summarize_site(x, sites=s, covariates=c) for x, s, c in parts]
    msg = fed.combine(r1)
    r2 = [fed.summarize_site(x, sites=s, covariates=c, message=msg) for x, s, c in parts]
    for summary, (x, _, _) in zip(r1 + r2, parts + parts):
        n = len(x)
        assert summary.meta["n_samples"] == n
        for name, arr in summary.arrays.items():
            assert n not in arr.shape, (name, arr.shape)
        # and what is printed is exactly what is in the file
        path = tmp_path / f"{summary.site}_{summary.round}.npz"
        summary.save(path)
        with np.load(path, allow_pickle=False) as z:
            stored = set(z.files) - {"__sitekit__"}
        assert stored == set(fed.describe_summary(summary)["array"])
    for name, arr in msg.arrays.items():
        assert not {23, 31, 17} & set(arr.shape), name


def test_sample_sized_array_is_refused(tmp_path):
    X, sites, cov = make_cohort(n_per_site=(12, 12), n_features=12, seed=14)
    x, s, c = next(_split(X, sites, cov))
    summary = fed.summarize_site(x, sites=s, covariates=c[["age"]])  # n == n_features is allowed
    summary.save(tmp_path / "ok.npz")
    forged = fed.SiteSummary(meta=dict(summary.meta), arrays=dict(summary.arrays))
    forged.arrays["dtd"] = np.zeros((12, 12))  # a "design" axis of sample length
    with pytest.raises(PrivacyError, match="sample count"):
        forged.save(tmp_path / "bad.npz")
    forged.arrays = dict(summary.arrays, values=x.to_numpy())
    with pytest.raises(PrivacyError):
        forged.save(tmp_path / "bad.npz")
    # a file edited to carry extra data is refused on load (checksum), and so is one
    # written with a valid checksum around the extra data (the protocol check)
    with np.load(tmp_path / "ok.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    np.savez(tmp_path / "edited.npz", **data, rows=x.to_numpy())
    with pytest.raises(TamperedModelError):
        fed.load_federated(tmp_path / "edited.npz")
    write_model_file(tmp_path / "forged.npz", kind="federated-summary", metadata=summary.meta,
                     arrays=dict(summary.arrays, rows=x.to_numpy()))
    with pytest.raises(ModelFileError, match="not part of the protocol"):
        fed.load_federated(tmp_path / "forged.npz")


def test_small_site_refuses():
    X, sites, cov = make_cohort(n_per_site=(9, 30), seed=15)
    x, s, c = next(_split(X, sites, cov))
    with pytest.raises(PrivacyError, match="min_site_size=10"):
        fed.summarize_site(x, sites=s, covariates=c)
    assert fed.summarize_site(x, sites=s, covariates=c[["age"]], min_site_size=5).meta["n_samples"] == 9


def test_combine_validates_inputs(tmp_path):
    X, sites, cov = make_cohort(seed=16)
    parts = list(_split(X, sites, cov))
    r1 = [fed.summarize_site(x, sites=s, covariates=c) for x, s, c in parts]
    # different features
    x0, s0, c0 = parts[0]
    other = fed.summarize_site(x0.drop(columns="feat_3"), sites=s0, covariates=c0)
    with pytest.raises(ProtocolError, match=r"different features .*feat_3"):
        fed.combine([other, *r1[1:]])
    # different covariate encoding
    other = fed.summarize_site(x0, sites=s0, covariates=c0[["sex", "age"]])
    with pytest.raises(ProtocolError, match="encodes its covariates"):
        fed.combine([other, *r1[1:]])
    other = fed.summarize_site(x0, sites=s0, covariates=c0[["age"]])
    with pytest.raises(ProtocolError, match="encodes its covariates"):
        fed.combine([other, *r1[1:]])
    # the same site twice
    with pytest.raises(ProtocolError, match="more than one summary"):
        fed.combine([r1[0], r1[0], *r1[1:]])
    msg = fed.combine(r1)
    r2 = [fed.summarize_site(x, sites=s, covariates=c, message=msg) for x, s, c in parts]
    with pytest.raises(ProtocolError, match="same round"):
        fed.combine([r1[0], *r2[1:]], message=msg)
    with pytest.raises(ProtocolError, match="round-1 message"):
        fed.combine(r2)
    with pytest.raises(ProtocolError, match="missing"):
        fed.combine(r2[1:], message=msg)
    # a message that the summaries did not answer
    msg_b = fed.combine(r1, parametric=False)
    with pytest.raises(ProtocolError, match="different round-1 message"):
        fed.combine(r2, message=msg_b)
    # another protocol version
    meta = dict(r1[0].meta, protocol_version=99)
    write_model_file(tmp_path / "v99.npz", kind="federated-summary", metadata=meta, arrays=r1[0].arrays)
    with pytest.raises(ProtocolError, match="protocol version 99"):
        fed.load_federated(tmp_path / "v99.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError):
        fed.load_federated(tmp_path / "junk.npz")


def test_confounded_covariate_is_named():
    X, sites, cov = make_cohort(seed=17)
    cov["scanner"] = np.where(sites == "A", "x", "y")
    parts = list(_split(X, sites, cov))
    r1 = [fed.summarize_site(x, sites=s, covariates=c) for x, s, c in parts]
    with pytest.raises(ConfoundingError, match=r"scanner\[y\]"):
        fed.combine(r1)


def test_site_table_must_hold_one_site():
    X, sites, cov = make_cohort(seed=18)
    with pytest.raises(ValidationError, match="one site"):
        fed.summarize_site(X, sites=sites, covariates=cov)


def test_integer_site_labels(tmp_path):
    X, sites, cov = make_cohort(seed=19)
    codes = {"A": 3, "B": 1, "C": 20, "D": 7}
    int_sites = np.array([codes[s] for s in sites])
    expected = ComBat(ref_site=7).fit_transform(X, sites=int_sites, covariates=cov)
    model = _run(X, int_sites, cov, tmp_path, ref_site="7")  # as typed on a command line
    assert list(model.sites_) == [1, 3, 7, 20]
    assert_close(model.transform(X, sites=int_sites, covariates=cov), expected, rel=1e-10)

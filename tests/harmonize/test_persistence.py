"""The single persistence layer: round trips of every kind, and a tamper matrix.

Regression guards for issue 15 item 2 (model files edited undetected: metadata outside the
checksum, array digest recomputable, NaN arrays accepted) and issue 13 item 1 (one writer,
one reader, ``sitekit.harmonize.load`` returns the right class).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import (
    CorruptModelError,
    InvalidModelError,
    MissingFileError,
    ModelFileError,
    ModelSignatureError,
    OutputExistsError,
    TamperedModelError,
    ValidationError,
    WrongModelKindError,
)
from sitekit.harmonize import ComBat, CovBat, NestedComBat, load
from sitekit.harmonize import federated as fed
from sitekit.harmonize._persistence import (
    SCHEMA_VERSION,
    _legacy_digest,
    read_model_file,
    register_kind,
    write_model_file,
)

LEGACY = Path(__file__).parent / "data" / "legacy_0.1"
FEATURES = [f"f{g}" for g in range(6)]


@pytest.fixture(scope="module")
def table():
    df = pd.read_csv(LEGACY / "input.csv")
    return df[FEATURES], df["site"], df[["age", "sex"]]


COMBAT_CASES = {
    "plain": {},
    "ref_site": {"ref_site": "s1"},
    "mean_only": {"mean_only": True},
    "nonparametric": {"parametric": False},
    "no_eb": {"eb": False},
    "gam": {"smooth": {"age": 6}},
    "target_site": {"target_site": "s2"},
}


@pytest.mark.parametrize("params", COMBAT_CASES.values(), ids=COMBAT_CASES.keys())
def test_combat_round_trip(tmp_path, table, params):
    X, sites, cov = table
    model = ComBat(**params).fit(X, sites=sites, covariates=cov)
    path = model.save(tmp_path / "m.npz", metadata={"note": "x"})
    for loaded in (ComBat.load(path), load(path)):
        assert type(loaded) is ComBat
        assert loaded.get_params() == model.get_params()
        assert loaded.file_metadata_["extra"] == {"note": "x"}
        assert loaded.file_metadata_["schema_version"] == SCHEMA_VERSION
        pd.testing.assert_frame_equal(loaded.transform(X, sites=sites, covariates=cov),
                                      model.transform(X, sites=sites, covariates=cov), check_exact=True)


def test_adapted_round_trip(tmp_path, table):
    X, sites, cov = table
    new = pd.read_csv(LEGACY / "new_site.csv")
    adapted = ComBat().fit(X, sites=sites, covariates=cov).adapt(
        new[FEATURES], sites=new["site"], covariates=new[["age", "sex"]])
    loaded = load(adapted.save(tmp_path / "a.npz"))
    assert list(loaded.sites_) == ["s0", "s1", "s2", "s3"]
    out = loaded.transform(new[FEATURES], sites=new["site"], covariates=new[["age", "sex"]])
    expected = adapted.transform(new[FEATURES], sites=new["site"], covariates=new[["age", "sex"]])
    pd.testing.assert_frame_equal(out, expected, check_exact=True)


def test_covbat_and_nested_round_trip(tmp_path, table):
    X, sites, cov = table
    cb = CovBat(n_components=3).fit(X, sites=sites, covariates=cov)
    got = load(cb.save(tmp_path / "c.npz"))
    assert type(got) is CovBat
    pd.testing.assert_frame_equal(got.transform(X, sites=sites, covariates=cov),
                                  cb.transform(X, sites=sites, covariates=cov), check_exact=True)
    nested = pd.read_csv(LEGACY / "nested_input.csv")
    batches = nested[["vendor", "recon"]]
    nc = NestedComBat(batch_cols=["vendor", "recon"]).fit(nested[FEATURES], batches=batches,
                                                          covariates=nested[["age"]])
    got = load(nc.save(tmp_path / "n.npz"))
    assert type(got) is NestedComBat and got.order_ == nc.order_
    pd.testing.assert_frame_equal(
        got.transform(nested[FEATURES], batches=batches, covariates=nested[["age"]]),
        nc.transform(nested[FEATURES], batches=batches, covariates=nested[["age"]]), check_exact=True)


def test_federated_round_trip(tmp_path, table):
    X, sites, cov = table
    parts = [(X[sites == s], sites[sites == s], cov[sites == s]) for s in ("s0", "s1", "s2")]
    r1 = [fed.summarize_site(x, sites=s, covariates=c) for x, s, c in parts]
    path = r1[0].save(tmp_path / "s.npz")
    got = load(path)
    assert isinstance(got, fed.SiteSummary) and got.meta == r1[0].meta
    for k, v in r1[0].arrays.items():
        np.testing.assert_array_equal(got.arrays[k], v)
    msg = fed.combine(r1)
    got = load(msg.save(tmp_path / "msg.npz"))
    assert isinstance(got, fed.RoundMessage) and got.digest() == msg.digest()


@pytest.mark.parametrize("name,cls", [
    ("combat_plain", ComBat), ("combat_adapted", ComBat), ("combat_gam", ComBat),
    ("covbat", CovBat), ("nested", NestedComBat), ("federated_model", ComBat),
    ("federated_summary1_s0", fed.SiteSummary), ("federated_summary2_s1", fed.SiteSummary),
    ("federated_message1", fed.RoundMessage),
])
def test_load_dispatches_legacy_files(name, cls):
    assert type(load(LEGACY / f"{name}.npz")) is cls


def test_legacy_federated_files_combine_to_the_legacy_model(table):
    X, sites, cov = table
    msg = fed.load_federated(LEGACY / "federated_message1.npz")
    r2 = [fed.load_federated(LEGACY / f"federated_summary2_{s}.npz") for s in ("s0", "s1", "s2")]
    model = fed.combine(r2, message=msg)
    expected = pd.read_csv(LEGACY / "federated_model.expected.csv")
    np.testing.assert_allclose(model.transform(X, sites=sites, covariates=cov).to_numpy(),
                               expected.to_numpy(), rtol=1e-12, atol=1e-12)


def test_writes_are_atomic_refuse_existing_and_get_umask_mode(tmp_path, table):
    X, sites, cov = table
    model = ComBat().fit(X, sites=sites, covariates=cov)
    path = model.save(tmp_path / "m.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        model.save(path)
    assert path.read_bytes() == before
    model.save(path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary files left


def test_no_pickle_and_no_object_arrays(tmp_path):
    with pytest.raises(ValidationError, match="no object arrays"):
        write_model_file(tmp_path / "o.npz", kind="x", arrays={"a": np.array([{}], dtype=object)},
                         metadata={})
    assert not (tmp_path / "o.npz").exists()


def test_register_kind_and_unknown_kind(tmp_path):
    path = write_model_file(tmp_path / "k.npz", kind="test-kind", arrays={"w": np.ones(2)}, metadata={"a": 1})
    with pytest.raises(WrongModelKindError, match="test-kind"):
        load(path)
    register_kind("test-kind", lambda mf: ("loaded", mf.metadata["a"], mf.arrays["w"].sum()))
    assert load(path) == ("loaded", 1, 2.0)


# --------------------------------------------------------------------------- tamper matrix
def _entries(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write(path: Path, entries: dict) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **entries)
    return path


def _edit_header(src: Path, dst: Path, edit) -> Path:
    entries = _entries(src)
    header = json.loads(entries["__sitekit__"].tobytes())
    edit(header)
    entries["__sitekit__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return _write(dst, entries)


def _edit_arrays(src: Path, dst: Path, edit) -> Path:
    entries = _entries(src)
    edit(entries)
    return _write(dst, entries)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, table):
    X, sites, cov = table
    folder = tmp_path_factory.mktemp("tamper")
    model = ComBat().fit(X, sites=sites, covariates=cov)
    return {
        "model": model,
        "plain": model.save(folder / "plain.npz"),
        "signed": model.save(folder / "signed.npz", key=b"consortium secret"),
        "covbat": CovBat(n_components=2).fit(X, sites=sites, covariates=cov).save(folder / "cb.npz"),
    }


def _rewrite_valid(saved, tmp_path, edit_meta=None, edit_arrays=None) -> Path:
    """A file with a VALID checksum around inconsistent content (what a forger or a buggy
    writer produces): only the content validation can refuse it."""
    mf = read_model_file(saved["plain"])
    meta = json.loads(json.dumps(mf.metadata))
    arrays = {k: v.copy() for k, v in mf.arrays.items()}
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    return write_model_file(tmp_path / "forged.npz", kind="ComBat", arrays=arrays, metadata=meta)


def _reverse_features(h):
    h["metadata"]["feature_names"] = h["metadata"]["feature_names"][::-1]


def _swap_sites(h):
    s = h["metadata"]["sites"]
    s[0], s[1] = s[1], s[0]


def _swap_levels(h):
    for spec in h["metadata"]["covariate_encoding"]["columns"]:
        if spec["kind"] == "categorical":
            spec["levels"] = spec["levels"][::-1]


def _old_style_digest(entries):
    entries["gamma_star_"] = entries["gamma_star_"] + 1.0
    header = json.loads(entries["__sitekit__"].tobytes())
    arrays = {k: v for k, v in entries.items() if k != "__sitekit__"}
    header["sha256"] = _legacy_digest(arrays)  # the array-only digest of 0.1, recomputed
    entries["__sitekit__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def _nan_gamma(a):
    a["gamma_star_"][0, 0] = np.nan


def _shape(a):
    a["delta_star_"] = a["delta_star_"][:, :-1]


def _short_names(m):
    m["feature_names"] = m["feature_names"][:-1]


def _dtype(a):
    a["adjusted_"] = a["adjusted_"].astype(np.float64)


def _levels_vs_columns(m):
    for spec in m["covariate_encoding"]["columns"]:
        if spec["kind"] == "categorical":
            spec["levels"].append("X")


TAMPER = [
    # (id, how the file is made, error, message fragment)
    ("metadata: reversed feature_names", lambda s, t: _edit_header(s["plain"], t / "f.npz", _reverse_features),
     TamperedModelError, "checksum"),
    ("metadata: swapped site names", lambda s, t: _edit_header(s["plain"], t / "f.npz", _swap_sites),
     TamperedModelError, "checksum"),
    ("metadata: swapped categorical levels", lambda s, t: _edit_header(s["plain"], t / "f.npz", _swap_levels),
     TamperedModelError, "checksum"),
    ("array edited", lambda s, t: _edit_arrays(s["plain"], t / "f.npz",
                                              lambda e: e.update(beta_=e["beta_"] * 2)),
     TamperedModelError, "checksum"),
    ("array edited, old-style digest recomputed",
     lambda s, t: _edit_arrays(s["plain"], t / "f.npz", _old_style_digest), TamperedModelError, "checksum"),
    ("array added", lambda s, t: _edit_arrays(s["plain"], t / "f.npz",
                                             lambda e: e.update(rows=np.zeros(3))),
     TamperedModelError, "checksum"),
    ("truncated", lambda s, t: (t / "f.npz").write_bytes(s["plain"].read_bytes()[:3000]) and t / "f.npz",
     CorruptModelError, "truncated"),
    ("not an archive", lambda s, t: (t / "f.npz").write_bytes(b"hello") and t / "f.npz",
     CorruptModelError, "truncated"),
    ("wrong kind", lambda s, t: s["covbat"], WrongModelKindError, "not a sitekit ComBat model"),
    ("NaN array (valid checksum)", lambda s, t: _rewrite_valid(s, t, edit_arrays=_nan_gamma),
     InvalidModelError, "gamma_star_"),
    ("shape mismatch (valid checksum)", lambda s, t: _rewrite_valid(s, t, edit_arrays=_shape),
     InvalidModelError, "delta_star_"),
    ("dtype mismatch (valid checksum)", lambda s, t: _rewrite_valid(s, t, edit_arrays=_dtype),
     InvalidModelError, "adjusted_"),
    ("feature_names vs arrays (valid checksum)", lambda s, t: _rewrite_valid(s, t, edit_meta=_short_names),
     InvalidModelError, "feature_names"),
    ("categorical levels vs design columns (valid checksum)",
     lambda s, t: _rewrite_valid(s, t, edit_meta=_levels_vs_columns), InvalidModelError, "covariate"),
    ("newer schema", lambda s, t: _edit_header(s["plain"], t / "f.npz",
                                               lambda h: h.update(schema_version=99)),
     ModelFileError, "newer than this sitekit"),
    ("missing file", lambda s, t: t / "absent.npz", MissingFileError, "does not exist"),
]


@pytest.mark.parametrize("make,error,fragment", [c[1:] for c in TAMPER], ids=[c[0] for c in TAMPER])
def test_tampered_files_are_refused(saved, tmp_path, make, error, fragment):
    path = make(saved, tmp_path)
    with pytest.raises(error, match=fragment) as info:
        ComBat.load(path)
    assert isinstance(info.value, ModelFileError | MissingFileError)
    if error is not WrongModelKindError:  # load() reads any kind
        with pytest.raises(error):
            load(path)


def test_signed_files(saved, tmp_path, table):
    X, sites, cov = table
    key = b"consortium secret"
    good = ComBat.load(saved["signed"], key=key)
    pd.testing.assert_frame_equal(good.transform(X, sites=sites, covariates=cov),
                                  saved["model"].transform(X, sites=sites, covariates=cov))
    assert load(saved["signed"], key=key.decode()).get_params() == good.get_params()
    with pytest.raises(ModelSignatureError, match="is signed; give the key"):
        ComBat.load(saved["signed"])
    with pytest.raises(ModelSignatureError, match="does not match the key"):
        ComBat.load(saved["signed"], key=b"another key")
    with pytest.raises(ModelSignatureError, match="not signed, but a key was given"):
        ComBat.load(saved["plain"], key=key)
    with pytest.raises(ModelSignatureError, match="sitekit 0.1"):
        ComBat.load(LEGACY / "combat_plain.npz", key=key)
    # a forger without the key who edits the metadata AND recomputes the checksum
    mf = read_model_file(saved["signed"], key=key)

    def forge(h):
        h["metadata"]["feature_names"] = h["metadata"]["feature_names"][::-1]
        from sitekit.harmonize._persistence import _content, _sha256

        h["sha256"] = _sha256(_content(h["kind"], h["schema_version"], h["sitekit_version"],
                                       h["metadata"], mf.arrays))

    forged = _edit_header(saved["signed"], tmp_path / "forged.npz", forge)
    with pytest.raises(ModelSignatureError, match="does not match the key"):
        ComBat.load(forged, key=key)
    with pytest.raises(ModelSignatureError):
        ComBat.load(forged)  # without the key a signed file is refused anyway
    # stripping the signature does not help when the reader asks for one
    stripped = _edit_header(forged, tmp_path / "stripped.npz", lambda h: h.update(hmac_sha256=None))
    with pytest.raises(ModelSignatureError, match="not signed"):
        ComBat.load(stripped, key=key)


def test_legacy_arrays_edited_are_refused(tmp_path):
    def edit(e):
        e["gamma_star_"] = e["gamma_star_"] + 1.0

    path = _edit_arrays(LEGACY / "combat_plain.npz", tmp_path / "l.npz", edit)
    with pytest.raises(TamperedModelError, match="checksum"):
        load(path)

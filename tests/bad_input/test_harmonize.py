"""Bad input to `sitekit harmonize` / `sitekit federated` and their model files, table-driven.

Every case asserts exit code 2, a one-line message that names the culprit and the fix,
and that nothing in the working folder was written or changed.  Regression guards for
issue 15 items 2 and 11 and issue 14 items 4-5.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sitekit.cli import main
from sitekit.harmonize import ComBat
from sitekit.harmonize import federated as fed
from sitekit.harmonize._persistence import read_model_file, write_model_file

LEGACY = Path(__file__).parents[1] / "harmonize" / "data" / "legacy_0.1"
FEATURES = [f"f{g}" for g in range(6)]
KEY = b"consortium secret"


def _edit_header(src: Path, dst: Path, edit) -> None:
    with np.load(src, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    header = json.loads(entries["__sitekit__"].tobytes())
    edit(header)
    entries["__sitekit__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(dst, "wb") as fh:
        np.savez(fh, **entries)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A working folder: table, models (plain, signed, tampered, truncated, NaN), key files,
    federated summaries."""
    d = tmp_path_factory.mktemp("bad_input")
    df = pd.read_csv(LEGACY / "input.csv")
    df["note"] = "ok"
    df.to_csv(d / "features.csv", index=False)
    unknown = df.copy()
    unknown.loc[0, "site"] = "site9"
    unknown.to_csv(d / "unknown_site.csv", index=False)
    model = ComBat().fit(df[FEATURES], sites=df["site"], covariates=df[["age", "sex"]])
    meta = {"cli": {"site_col": "site", "covariates": ["age", "sex"]}}
    model.save(d / "model.npz", metadata=meta)
    model.save(d / "signed.npz", metadata=meta, key=KEY)
    (d / "key.txt").write_bytes(KEY + b"\n")
    (d / "other_key.txt").write_bytes(b"another secret\n")
    (d / "empty_key.txt").write_bytes(b"")
    _edit_header(d / "model.npz", d / "tampered.npz",
                 lambda h: h["metadata"].update(feature_names=h["metadata"]["feature_names"][::-1]))
    (d / "truncated.npz").write_bytes((d / "model.npz").read_bytes()[:2500])
    mf = read_model_file(d / "model.npz")
    arrays = {k: v.copy() for k, v in mf.arrays.items()}
    arrays["gamma_star_"][1, 2] = np.nan
    write_model_file(d / "nan_model.npz", kind="ComBat", arrays=arrays, metadata=mf.metadata)
    # federated: one site alone in a level; a corrupt summary; a tampered summary
    small = df[df["site"] == "s0"].copy()
    small["sex"] = ["M"] + ["F"] * (len(small) - 1)
    small.to_csv(d / "site_small_level.csv", index=False)
    parts = [df[df["site"] == s] for s in ("s0", "s1", "s2")]
    r1 = [fed.summarize_site(p[FEATURES], sites=p["site"], covariates=p[["age", "sex"]]) for p in parts]
    for s in r1:
        s.save(d / f"r1_{s.site}.npz")
    bad = {k: v.copy() for k, v in r1[1].arrays.items()}
    bad["dty"][0, 3] = np.nan
    write_model_file(d / "r1_corrupt.npz", kind="federated-summary", metadata=r1[1].meta, arrays=bad)
    _edit_header(d / "r1_s2.npz", d / "r1_tampered.npz",
                 lambda h: h["metadata"].update(n_samples=h["metadata"]["n_samples"] + 1))
    (d / "harmonized.csv").write_text("existing output\n")
    return d


def _state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


RUN = ["harmonize", "run", "{d}/features.csv", "--site-col", "site", "--covariates", "age,sex"]
APPLY = ["harmonize", "apply", "{d}/features.csv", "--out", "{d}/new.csv"]

CASES = [
    # id, arguments, culprit fragment, fix fragment
    ("run --out is a folder", [*RUN, "--out", "{d}/results"], "'{d}/results' does not end in",
     "give a path such as"),
    ("run --out ends with a slash", [*RUN, "--out", "{d}/results/"], "is a folder", "give a file path"),
    ("run --out exists", [*RUN, "--out", "{d}/harmonized.csv"], "harmonized.csv' already exists",
     "pass --force"),
    ("run --out is the input", [*RUN, "--out", "{d}/features.csv", "--force"], "also an input",
     "choose another path"),
    ("run --out below a file", [*RUN, "--out", "{d}/features.csv/h.csv"],
     "'{d}/features.csv' is a file, not a folder", "choose another path"),
    ("run --model is not .npz", [*RUN, "--out", "{d}/h2.csv", "--model", "{d}/m.csv"],
     "--model '{d}/m.csv' does not end in .npz", "give a path such as"),
    ("run --site-col absent", ["harmonize", "run", "{d}/features.csv", "--site-col", "centre",
                               "--out", "{d}/h2.csv"], "['centre'] are not in the table", "its columns are"),
    ("run --features matches nothing", [*RUN, "--features", "glcm_*", "--out", "{d}/h2.csv"],
     "'glcm_*' matches no column", "its columns are"),
    ("run --features not numeric", [*RUN, "--features", "f0,note", "--out", "{d}/h2.csv"],
     "['note'] are not numeric", "leave them out of --features"),
    ("run --features holds the site", [*RUN, "--features", "f0,age", "--out", "{d}/h2.csv"],
     "['age'] are the site, a covariate", "Remove them from --features"),
    ("run --nonparametric with --mean-only", [*RUN, "--nonparametric", "--mean-only", "--out", "{d}/h2.csv"],
     "--nonparametric or --mean-only", "not both"),
    ("run --n-components abc", [*RUN, "--method", "covbat", "--n-components", "abc", "--out", "{d}/h2.csv"],
     "'abc' is neither a number", "e.g. 0.95"),
    ("run --smooth age:x", [*RUN, "--smooth", "age:x", "--out", "{d}/h2.csv"], "'age:x'", "e.g. age:7"),
    ("run nested without --batch-cols", [*RUN, "--method", "nested", "--out", "{d}/h2.csv"],
     "needs batch_cols", "--batch-cols vendor,recon"),
    ("apply tampered model", [*APPLY, "--model", "{d}/tampered.npz"], "tampered.npz' failed its checksum",
     "fit the model again"),
    ("apply truncated model", [*APPLY, "--model", "{d}/truncated.npz"], "truncated.npz' could not be read",
     "fit and save the model again"),
    ("apply NaN model", [*APPLY, "--model", "{d}/nan_model.npz"], "'gamma_star_' holds 1 NaN",
     "fit the model again"),
    ("apply a federated summary", [*APPLY, "--model", "{d}/r1_s0.npz"], "not a harmonisation model",
     "'sitekit harmonize fit'"),
    ("apply signed model without key", [*APPLY, "--model", "{d}/signed.npz"], "signed.npz' is signed",
     "--key-file"),
    ("apply signed model wrong key", [*APPLY, "--model", "{d}/signed.npz", "--key-file", "{d}/other_key.txt"],
     "does not match the key", "Check the key file"),
    ("apply unsigned model with key", [*APPLY, "--model", "{d}/model.npz", "--key-file", "{d}/key.txt"],
     "is not signed, but a key was given", "Ask its author for a signed file"),
    ("apply empty key file", [*APPLY, "--model", "{d}/signed.npz", "--key-file", "{d}/empty_key.txt"],
     "empty_key.txt' is empty", "put the shared secret in it"),
    ("apply unknown site", ["harmonize", "apply", "{d}/unknown_site.csv", "--model", "{d}/model.npz",
                            "--out", "{d}/new.csv"], "site9", "adapt"),
    ("apply --out is a model path", ["harmonize", "apply", "{d}/features.csv", "--model", "{d}/model.npz",
                                     "--out", "{d}/new.npz"], "'{d}/new.npz' does not end in .csv",
     "give a path such as"),
    ("apply --model-out without --adapt", [*APPLY, "--model", "{d}/model.npz", "--model-out", "{d}/a.npz"],
     "--model-out", "--adapt"),
    ("summarize level of one subject", ["federated", "summarize", "{d}/site_small_level.csv", "--site-col",
                                        "site", "--covariates", "age,sex", "--out", "{d}/s.npz"],
     "'sex' level 'M' has 1 sample(s)", "Merge the level"),
    ("combine corrupt summary", ["federated", "combine", "{d}/r1_s0.npz", "{d}/r1_corrupt.npz",
                                 "{d}/r1_s2.npz", "--out", "{d}/msg.npz"], "site 's1'", "'dty' holds 1 NaN"),
    ("combine tampered summary", ["federated", "combine", "{d}/r1_s0.npz", "{d}/r1_s1.npz",
                                  "{d}/r1_tampered.npz", "--out", "{d}/msg.npz"],
     "r1_tampered.npz' failed its checksum", "Use the original file"),
]


@pytest.mark.parametrize("args,culprit,fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exit_2_one_line_nothing_written(template, tmp_path, capsys, args, culprit, fix):
    d = tmp_path / "w"
    shutil.copytree(template, d)
    before = _state(d)
    rc = main([a.replace("{d}", str(d)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, err
    assert culprit.replace("{d}", str(d)) in lines[0], lines[0]
    assert fix in lines[0], lines[0]
    assert "Traceback" not in err
    assert _state(d) == before  # nothing written, nothing changed, no temporary files

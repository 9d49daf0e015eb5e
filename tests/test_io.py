"""Round trips and named errors of sitekit.io."""

import locale

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sitekit.exceptions import (
    CorruptFileError,
    FileError,
    MissingFileError,
    OutputExistsError,
    ValidationError,
)
from sitekit.io import (
    atomic_output,
    check_columns,
    file_hash,
    numeric_columns,
    preserve_locale,
    read_image,
    read_table,
    remove_stale_temporaries,
    stale_temporaries,
    write_image,
    write_table,
)


@pytest.fixture
def table():
    return pd.DataFrame({"subject_id": ["a", "b", "c"], "site": ["x", "y", "x"], "f1": [1.5, 2.0, np.nan]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_round_trip(tmp_path, table, suffix):
    path = write_table(table, tmp_path / f"t{suffix}")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_existing_output_needs_force(tmp_path, table):
    p = tmp_path / "t.csv"
    write_table(table, p)
    with pytest.raises(OutputExistsError, match="--force"):
        write_table(table, p)
    write_table(table.iloc[:1], p, force=True)
    assert len(read_table(p)) == 1


def test_table_errors_name_the_file(tmp_path):
    with pytest.raises(MissingFileError, match="nope.csv"):
        read_table(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CorruptFileError, match="empty.csv.*empty"):
        read_table(empty)
    bad = tmp_path / "bad.xlsx"
    bad.write_text("x")
    with pytest.raises(CorruptFileError, match="unknown suffix"):
        read_table(bad)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(CorruptFileError, match="corrupt.parquet"):
        read_table(corrupt)
    with pytest.raises(ValidationError, match="unknown suffix"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.xls")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_image_round_trip(tmp_path, suffix):
    a = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((2.0, 2.5, 3.0))
    img.SetOrigin((-10.0, 5.0, 1.0))
    path = write_image(img, tmp_path / f"img{suffix}")
    back = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), a)
    assert back.GetSpacing() == pytest.approx((2.0, 2.5, 3.0))
    assert back.GetOrigin() == pytest.approx((-10.0, 5.0, 1.0))


def test_dicom_series_round_trip(tmp_path):
    a = (np.random.default_rng(1).random((4, 8, 9)) * 1000).astype(np.int16)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((2.0, 2.0, 3.0))
    d = tmp_path / "series"
    d.mkdir()
    before = locale.getpreferredencoding(False).upper().replace("-", "")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(a.shape[0]):
        sl = img[:, :, k]
        sl.SetMetaData("0008|0060", "PT")
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        sl.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k))
        writer.SetFileName(str(d / f"{k:03d}.dcm"))
        with preserve_locale():
            writer.Execute(sl)
    # GDCM's writer leaves LC_CTYPE at "C"; preserve_locale gives it back
    assert locale.getpreferredencoding(False).upper().replace("-", "") in {"UTF8", before}
    back = read_image(d)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), a)
    assert back.GetSpacing() == pytest.approx((2.0, 2.0, 3.0))
    assert back.GetMetaData("0008|0060") == "PT"


def test_image_errors_name_the_file(tmp_path):
    with pytest.raises(MissingFileError, match="missing.nii.gz"):
        read_image(tmp_path / "missing.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        read_image(empty)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(CorruptFileError, match="corrupt.nii.gz"):
        read_image(corrupt)
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(CorruptFileError, match="not an image"):
        read_image(table)
    with pytest.raises(CorruptFileError, match="no readable DICOM"):
        read_image(tmp_path)


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_output_over_input_refused(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("a\n1\n")
    with pytest.raises(OutputExistsError, match="also an input"):
        with atomic_output(p, force=True, inputs=(p,)):
            pass


def test_file_hash_file_and_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("x")
    h1 = file_hash(tmp_path / "d")
    (tmp_path / "d" / "a.txt").write_text("y")
    assert file_hash(tmp_path / "d") != h1
    assert len(file_hash(tmp_path / "d" / "a.txt")) == 64


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused(tmp_path, suffix):
    """ITK fills the missing voxels of a truncated NIfTI with zeros; sitekit refuses it."""
    a = np.random.default_rng(2).random((20, 30, 40)).astype(np.float32)
    path = write_image(sitk.GetImageFromArray(a), tmp_path / f"img{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CorruptFileError, match="truncated|could not be read"):
        read_image(path)


def test_outputs_get_the_usual_file_mode(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    p = write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)


# ------------------------------------------------------------------ tables: no silent changes
def test_text_columns_keep_leading_zeros(tmp_path):
    """Regression (issue 15 item 8): '01' -> 1, '0000' -> 0, '007' read as a number."""
    p = tmp_path / "t.csv"
    p.write_text("site,subject_id,x\n01,007,1.5\n0000,010,2.5\n")
    df = read_table(p, text_columns=["site", "subject_id", "not_there"])
    assert df["site"].tolist() == ["01", "0000"]
    assert df["subject_id"].tolist() == ["007", "010"]
    assert df["x"].tolist() == [1.5, 2.5]
    back = read_table(write_table(df, tmp_path / "back.csv"), text_columns=["site", "subject_id"])
    assert back["site"].tolist() == ["01", "0000"] and back["subject_id"].tolist() == ["007", "010"]
    pq = write_table(df, tmp_path / "t.parquet")
    assert read_table(pq, text_columns="all")["x"].tolist() == ["1.5", "2.5"]


def test_duplicated_headers_are_refused(tmp_path):
    """Regression: pandas renamed the second 'x' to 'x.1' without a word."""
    p = tmp_path / "dup.csv"
    p.write_text("site,x,y,x\na,1,2,3\n")
    with pytest.raises(CorruptFileError, match=r"dup.csv.*duplicated column name.*'x' \(2x\)"):
        read_table(p)


def test_semicolon_csv_is_named(tmp_path):
    """Regression: a semicolon CSV was one column, then 'column not found'."""
    p = tmp_path / "eu.csv"
    p.write_text("site;subject_id;x\nA;1;1,5\nB;2;2,5\n")
    with pytest.raises(CorruptFileError, match=r"eu.csv.*semicolon-separated.*sep=';'"):
        read_table(p)
    df = read_table(p, sep=";", decimal=",")
    assert df["x"].tolist() == [1.5, 2.5]


def test_numeric_columns_names_column_line_and_value():
    df = pd.DataFrame({"a": ["1.0", "2.0", None, "n/a", "bad"], "b": [1, 2, 3, 4, 5]})
    with pytest.raises(ValidationError, match=r"'a'.*'n/a' on line 5 \(2 such cells"):
        numeric_columns(df, ["a", "b"], source="Table 't.csv'")
    comma = pd.DataFrame({"a": ["1.5", "2,5"]})
    with pytest.raises(ValidationError, match=r"'2,5' on line 3.*decimal comma.*--decimal ,"):
        numeric_columns(comma, ["a"], source="Table 't.csv'")
    ok = numeric_columns(pd.DataFrame({"a": ["1.5", "", None], "b": [1, 2, 3]}), ["a", "b"], source="t")
    assert ok["a"].tolist()[0] == 1.5 and ok["a"].isna().tolist() == [False, True, True]
    assert ok.dtypes.tolist() == [np.float64, np.float64]


def test_check_columns_suggests_and_lists_few():
    df = pd.DataFrame({f"f{i}": [0] for i in range(200)} | {"site": ["a"]})
    with pytest.raises(ValidationError) as info:
        check_columns(df, ["sites"], source="Table 't.csv'", what="--site-col")
    msg = str(info.value)
    assert "did you mean 'site'" in msg and "201 columns" in msg and "f150" not in msg
    assert "\n" not in msg


def test_unwritable_output_names_the_users_path(tmp_path):
    """Regression (issue 15 item 11): the message named the hidden temporary file."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileError, match=r"afile/out.csv.*is a file, not a folder") as info:
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "afile" / "out.csv")
    assert ".tmp" not in str(info.value)
    with pytest.raises(FileError, match=r"Cannot write output '/proc/sitekit_out.csv'") as info:
        write_table(pd.DataFrame({"a": [1]}), "/proc/sitekit_out.csv")
    assert ".tmp" not in str(info.value)


def test_write_error_inside_the_block_names_the_target(tmp_path):
    import errno as _errno

    target = tmp_path / "out.csv"
    with pytest.raises(FileError, match=r"Cannot write output '.*out.csv': No space left"):
        with atomic_output(target) as tmp:
            raise OSError(_errno.ENOSPC, "No space left on device", str(tmp))
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_stale_temporaries_found_and_removed(tmp_path):
    target = tmp_path / "features.parquet"
    (tmp_path / ".features.parquet.ab3de_12.tmp.parquet").write_text("half")
    (tmp_path / ".features.parquet.zzzzzzzz.tmp").mkdir()
    (tmp_path / ".other.parquet.ab3de_12.tmp.parquet").write_text("not ours")
    assert len(stale_temporaries(target)) == 2
    assert len(remove_stale_temporaries(target)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.parquet.ab3de_12.tmp.parquet"]

"""Bad tables (issue 15 items 8 and 11): leading zeros, non-numeric cells, decimal commas,
duplicated headers, semicolon CSVs, wrong columns, unwritable outputs."""

from __future__ import annotations

import pandas as pd
import pytest

from sitekit.exceptions import CorruptFileError, FileError, ValidationError
from sitekit.io import check_columns, numeric_columns, read_table, write_table

from .conftest import write_suite


def _edit(path, fn):
    df = pd.read_csv(path)
    df = fn(df)
    df.to_csv(path, index=False)


def _set_cell(line: int, value: str):
    def fn(df):
        col = [c for c in df.columns if c.startswith("original_")][1]
        df[col] = df[col].astype(object)
        df.loc[line - 2, col] = value
        return df
    return fn


CLI_CASES = [
    # (id, how the table is spoiled, fragments of the message)
    ("non-numeric-cell", _set_cell(7, "pending"), ["'pending' on line 7",
                                                    "feature column 'original_"]),
    ("decimal-comma", _set_cell(5, "3,25"), ["'3,25' on line 5", "decimal comma",
                                              '[data] decimal = ","']),
    ("two-bad-cells", lambda df: _set_cell(9, "x")(_set_cell(4, "<0.1")(df)),
     ["'<0.1' on line 4", "2 such cells"]),
]


@pytest.mark.parametrize(("spoil", "fragments"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_non_numeric_feature_cells_are_named(bad, table, spoil, fragments):
    _edit(table, spoil)
    write_suite(bad)
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=fragments)


def test_duplicated_headers_are_refused(bad, table):
    text = table.read_text().splitlines()
    header = text[0].split(",")
    header[-1] = header[-2]  # two columns of one name
    table.write_text("\n".join([",".join(header), *text[1:]]) + "\n")
    write_suite(bad)
    bad.run(["robustness", "run", "suite.toml", "--out", "out"],
            fragments=["duplicated column name", f"'{header[-1]}' (2x)"])


def test_semicolon_csv_is_named_not_column_not_found(bad, table):
    df = pd.read_csv(table)
    df.to_csv(table, index=False, sep=";", decimal=",")
    write_suite(bad)
    bad.run(["robustness", "run", "suite.toml", "--out", "out"],
            fragments=["semicolon-separated", '[data] sep = ";"'], absent=["not in", "has no"])


def test_wrong_site_column_lists_a_few_columns_and_suggests(bad, table):
    df = pd.read_csv(table)
    for i in range(200):
        df[f"extra_{i}"] = 0.0
    df.to_csv(table, index=False)
    write_suite(bad, site="sites")
    err = bad.run(["robustness", "run", "suite.toml", "--out", "out"],
                  fragments=["'sites'", "did you mean 'site'", "columns"])
    assert "extra_150" not in err and len(err) < 600


def test_unwritable_output_names_the_users_path(bad, table):
    write_suite(bad)
    bad.write("afile", "x")
    err = bad.run(["robustness", "run", "suite.toml", "--out", "afile/out"],
                  fragments=["afile"])
    assert ".tmp" not in err


# ------------------------------------------------------------------ API
API_CASES = [
    ("semicolon", "a;b;c\n1;2;3\n", {}, CorruptFileError, ["semicolon-separated", "sep=';'"]),
    ("duplicated", "a,b,a\n1,2,3\n", {}, CorruptFileError, ["duplicated column name", "'a' (2x)"]),
    ("tab-in-csv", "a\tb\n1\t2\n", {}, CorruptFileError, ["tab-separated"]),
    ("long-row", "a,b\n1,2,3,4\n5\n", {}, CorruptFileError, ["4 fields on line 2", "2 column names"]),
    ("ragged", "a,b\n1,2\n5,6,7\n", {}, CorruptFileError, ["t.csv", "could not be read"]),
]


@pytest.mark.parametrize(("text", "kwargs", "exc", "fragments"), [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_read_table_api(bad, text, kwargs, exc, fragments):
    bad.write("t.csv", text)
    bad.call(lambda: read_table(bad.path("t.csv"), **kwargs), exc, fragments)


def test_leading_zeros_survive_a_round_trip(bad):
    bad.write("t.csv", "site,subject_id,x\n01,007,1.5\n0000,010,2\n")
    df = read_table(bad.path("t.csv"), text_columns=["site", "subject_id"])
    write_table(df, bad.path("u.csv"))
    back = read_table(bad.path("u.csv"), text_columns=["site", "subject_id"])
    assert back["site"].tolist() == ["01", "0000"] and back["subject_id"].tolist() == ["007", "010"]


def test_numeric_and_column_checks_api(bad):
    df = pd.DataFrame({"site": ["a", "b"], "f": ["1.0", "2,5"]})
    bad.call(lambda: numeric_columns(df, ["f"], source="Table 't.csv'"), ValidationError,
             ["'f'", "'2,5' on line 3", "decimal comma"])
    bad.call(lambda: check_columns(df, ["stie"], source="Table 't.csv'", what="--site-col"),
             ValidationError, ["'stie'", "did you mean 'site'"])


def test_write_into_a_file_path_api(bad):
    bad.write("afile", "x")
    msg = bad.call(lambda: write_table(pd.DataFrame({"a": [1]}), bad.path("afile/t.csv")),
                   FileError, ["afile/t.csv", "is a file, not a folder"])
    assert ".tmp" not in msg

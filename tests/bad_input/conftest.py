"""Harness of the bad-input matrix: run a CLI command (or an API call) on bad input in a
temporary folder and check the contract.

Every case asserts (1) the exit code (2 for bad input), (2) a one-line message without a
traceback that contains the given fragments (the culprit and the fix), and (3) that the
folder is byte-for-byte unchanged: nothing written, nothing half-written, no temporary
file left behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sitekit.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> SHA-256 (``"<dir>"`` for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class BadInput:
    """``run(args, code=2, fragments=[...])`` for the CLI, ``call(fn, exc, fragments)`` for the API."""

    def __init__(self, root: Path, capsys, monkeypatch) -> None:
        self.root = root
        self._capsys = capsys
        monkeypatch.chdir(root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return p

    def run(self, args: Sequence[str], *, code: int = 2, fragments: Sequence[str] = (),
            absent: Sequence[str] = ()) -> str:
        """Run ``sitekit ARGS`` in the folder; return the message after checking it."""
        self._capsys.readouterr()
        before = snapshot(self.root)
        got = main([str(a) for a in args])
        captured = self._capsys.readouterr()
        err = captured.err.strip()
        assert got == code, f"exit {got}, expected {code}: {err}\n{captured.out}"
        assert "Traceback" not in err and "Unexpected error" not in err, err
        assert err.count("\n") == 0, f"not one line:\n{err}"
        for f in fragments:
            assert f in err, f"{f!r} not in: {err}"
        for f in absent:
            assert f not in err, f"{f!r} should not be in: {err}"
        assert snapshot(self.root) == before, "the folder changed"
        return err

    def call(self, fn: Callable[[], object], exc: type[BaseException],
             fragments: Sequence[str] = ()) -> str:
        """Call ``fn()``; it must raise ``exc`` naming ``fragments`` and change nothing."""
        before = snapshot(self.root)
        with pytest.raises(exc) as info:
            fn()
        message = str(info.value)
        for f in fragments:
            assert f in message, f"{f!r} not in: {message}"
        assert "\n" not in message, message
        assert snapshot(self.root) == before, "the folder changed"
        return message


@pytest.fixture
def bad(tmp_path, capsys, monkeypatch) -> BadInput:
    """The bad-input harness in a fresh temporary folder (also the working directory)."""
    return BadInput(tmp_path, capsys, monkeypatch)


SUITE = """
[data]
table = "{table}"
features = {features}
label = "outcome"
site = "{site}"
{data_extra}

[model]
{model}

[settings]
n_bootstrap = 10
n_permutations = 0
cv = 3
n_repeats = 2

[stress]
noise_levels = [0.25]
calibration_factors = [1.1]

[adversarial]
budgets = [0.25]
max_cases = 5
max_iter = 2
max_eval = 20

[checks]
{checks}
"""


def write_suite(bad: BadInput, *, name: str = "suite.toml", table: str = "table.csv",
                features: str = '"^original_"', site: str = "site", data_extra: str = "",
                model: str = 'spec = "logistic"', checks: str = "worst_site_auc = { min = 0.5 }",
                ) -> Path:
    """A small suite file in the harness folder (fast settings)."""
    return bad.write(name, SUITE.format(table=table, features=features, site=site,
                                        data_extra=data_extra, model=model, checks=checks))


@pytest.fixture
def table(bad) -> Path:
    """A small three-site feature table ``table.csv`` (6 features, outcome, age, sex)."""
    from sitekit.datasets import make_feature_table

    df = make_feature_table(n_per_site=(20, 20, 20), n_features=6, random_state=0)
    path = bad.path("table.csv")
    df.to_csv(path, index=False)
    return path

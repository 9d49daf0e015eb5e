"""The command line: --help with an example everywhere, --version, the exit-code contract,
one-line errors (issue 14 item 10, issue 15 item 11)."""

import click
import pytest
from click.testing import CliRunner

from sitekit import __version__
from sitekit.cli import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    cli,
    main,
)
from sitekit.exceptions import CheckFailedError, ValidationError


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


ALL = list(_all_commands(cli))
COMMANDS = [path for path, cmd in ALL if not isinstance(cmd, click.Group)]
GROUPS = [path for path, cmd in ALL if isinstance(cmd, click.Group)]

#: Commands of other parts whose help has no example yet. strict xfail: when the example
#: lands the test XPASSes and fails, so the entry must be removed here.
NO_EXAMPLE_YET: set = set()


def _cmd(path):
    cmd = cli
    for p in path:
        cmd = cmd.commands[p]
    return cmd


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help_with_an_example(path, request):
    if path in NO_EXAMPLE_YET:
        request.applymarker(pytest.mark.xfail(strict=True, reason="its owner adds an example"))
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert _cmd(path).help, f"`sitekit {' '.join(path)}` has no help text"
    assert "Example" in result.output and f"sitekit {' '.join(path)}" in result.output, (
        f"`sitekit {' '.join(path)} --help` shows no example")


@pytest.mark.parametrize("path", [(), *GROUPS], ids=["sitekit", *(" ".join(g) for g in GROUPS)])
def test_every_group_help_lists_its_commands(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    group = _cmd(path)
    assert group.help
    for name in group.commands:
        assert name in result.output
    assert result.output.count("\n") > 3


def test_expected_commands_registered():
    names = {c[0] for c in COMMANDS}
    assert {"datasets", "demo", "extract", "report", "robustness"} <= names | {g[0] for g in GROUPS}
    assert ("robustness", "run") in COMMANDS and ("robustness", "features") in COMMANDS


# ------------------------------------------------------------------ exit-code contract
@pytest.fixture
def probe():
    """A temporary command that raises what the test asks for (the mapping is in main)."""
    box = {}

    @cli.command("_probe", hidden=True)
    def _probe():
        raise box["exc"]

    def set_exc(exc):
        box["exc"] = exc

    yield set_exc
    del cli.commands["_probe"]


@pytest.mark.parametrize(
    ("exc", "code", "fragments"),
    [
        (CheckFailedError("2 robustness check(s) failed: a; b"), EXIT_CHECK_FAILED,
         ["FAIL: 2 robustness check(s) failed"]),
        (ValidationError("Column 'x' of 't.csv' is bad; fix it.\nsecond line"), EXIT_BAD_INPUT,
         ["Error: Column 'x' of 't.csv' is bad; fix it.", "--debug shows more"]),
        (PermissionError(13, "Permission denied", "/data/out.csv"), EXIT_BAD_INPUT,
         ["cannot use '/data/out.csv': Permission denied"]),
        (RuntimeError("boom\n  File worker.py, line 3\nTraceback junk"), EXIT_UNEXPECTED,
         ["Unexpected error: RuntimeError: boom", "--debug"]),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, ["Interrupted"]),
    ],
    ids=["check-failed-1", "bad-input-2", "os-error-2", "unexpected-3", "interrupted-130"],
)
def test_exit_code_contract(probe, capsys, exc, code, fragments):
    probe(exc)
    assert main(["_probe"]) == code
    err = capsys.readouterr().err.strip()
    for f in fragments:
        assert f in err, err
    assert "Traceback" not in err and err.count("\n") == 0, err


def test_debug_shows_the_traceback(probe, capsys):
    probe(RuntimeError("boom"))
    assert main(["--debug", "_probe"]) == EXIT_UNEXPECTED
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["extract", "m.csv", "--out", "f.parquet", "--workers", "abc"],
        ["robustness", "features", "m.csv", "--out", "o", "--perturbations", "p.toml", "--n", "x"],
        ["extract"],
    ],
    ids=["unknown-command", "workers-abc", "n-abc", "missing-argument"],
)
def test_usage_errors_are_one_line_exit_2(args, capsys):
    """Regression: option errors gave a usage block (or exit 3) instead of one line."""
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.strip().count("\n") == 0, err
    assert "--help" in err


def test_ok_is_0(tmp_path):
    assert main(["datasets", "--help"]) == EXIT_OK


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("not empty")
    code = main(["datasets", "generate", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert err.strip().count("\n") == 0
    assert "--force" in err and "Traceback" not in err


def test_demo_prints_site_summary(tmp_path):
    # one fast step of the chain (the whole chain is tested in tests/test_demo.py)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--steps", "harmonize"])
    assert result.exit_code == 0, result.output
    for site in ("site_A", "site_B", "site_C", "site_D"):
        assert site in result.output
    assert "harmonize" in result.output and (tmp_path / "demo" / "harmonize" / "model.npz").exists()

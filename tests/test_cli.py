"""The command line: --help everywhere, --version, exit codes, one-line errors."""

import click
import pytest
from click.testing import CliRunner

from sitekit import __version__
from sitekit.cli import EXIT_BAD_INPUT, cli, main


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


COMMANDS = list(_all_commands(cli))


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    cmd = cli
    for p in path:
        cmd = cmd.commands[p]
    assert cmd.help, f"`sitekit {' '.join(path)}` has no help text"


def test_expected_commands_registered():
    names = {c[0] for c in COMMANDS}
    assert {"datasets", "demo"} <= names


def test_usage_error_exit_code():
    assert main(["no-such-command"]) == EXIT_BAD_INPUT


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

"""The README's quick starts run as written (issue 13): every ```python block and every
command of the ```bash block under a "Quick start" heading, in a fresh folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(language: str) -> list[tuple[str, str]]:
    """(heading, code) of every fenced block of ``language`` below a Quick start heading."""
    text = README.read_text(encoding="utf-8")
    out, heading = [], ""
    for part in re.split(r"^(## .*)$", text, flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        if not heading.lower().startswith("quick start"):
            continue
        out += [(heading, m) for m in re.findall(rf"```{language}\n(.*?)```", part, flags=re.S)]
    return out


def _env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def test_readme_has_a_quick_start_per_user():
    headings = {h for h, _ in _blocks("python")}
    assert len(headings) >= 3, headings
    assert len(README.read_text(encoding="utf-8").splitlines()) < 250


@pytest.mark.slow
@pytest.mark.parametrize("heading,code", _blocks("python"), ids=lambda v: str(v)[:40])
def test_python_quick_start_runs(heading, code, tmp_path):
    script = tmp_path / "quick_start.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{heading}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.slow
def test_cli_quick_start_runs(tmp_path):
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    commands = [line.split("#")[0].strip() for _, block in _blocks("bash")
                for line in block.splitlines() if line.strip().startswith("sitekit ")]
    assert len(commands) >= 3
    for command in commands:
        args = shlex.split(command)
        proc = subprocess.run([sys.executable, "-m", "sitekit", *args[1:]], cwd=tmp_path,
                              env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode in (0, 1), f"{command}\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "report.html").is_file()

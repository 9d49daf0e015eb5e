"""`sitekit report`: one self-contained HTML report from the output folders of the commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from sitekit.cli._common import force_option, show_warnings


def register(cli: click.Group) -> None:
    @cli.command("report")
    @click.argument("results_dir", type=click.Path(file_okay=False))
    @click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
                  help="The HTML file to write; a JSON of the results goes next to it.")
    @click.option("--show-ids", is_flag=True,
                  help="Show subject identifiers (hidden by default).")
    @click.option("--title", default=None, help="Title of the report.")
    @force_option
    def report(results_dir: str, out: str, show_ids: bool, title: str | None, force: bool) -> None:
        """Build a self-contained HTML report from sitekit results.

        RESULTS_DIR is the output folder of `sitekit earl check/calibrate`, `harmonize run`,
        `extract`, `robustness features` or `robustness run`, or a folder holding several of
        them (as `sitekit demo` writes).  The report has a summary of verdicts at the top
        (a failing EARL site says FAIL), a section per result found and the provenance.
        It embeds its figures, uses no external URL and works offline.

        \b
        Example:
          sitekit report demo_output --out report.html
        """
        from sitekit.reports import build_report

        command = "sitekit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        with show_warnings():
            rep = build_report(results_dir, show_ids=show_ids, title=title, command_line=command)
            path = rep.save_as_html(out, force=force)
        for w in rep.warnings:
            click.secho(f"Warning: {w}", fg="yellow", err=True)
        for v in rep.verdicts:
            colour = {"PASS": "green", "FAIL": "red", "WARN": "yellow"}.get(v.status)
            click.echo(click.style(f"{v.status:5s}", fg=colour) + f" {v.label}: {v.detail}")
        click.echo(f"Report: {Path(path).resolve()}  (results: {Path(path).with_suffix('.json')})")

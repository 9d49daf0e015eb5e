"""`sitekit robustness run SUITE.toml --out DIR`: model robustness suites for CI."""

from __future__ import annotations

import click

from sitekit.cli._common import force_option, get_or_create_group, print_table, show_warnings


def register(cli: click.Group) -> None:
    group = get_or_create_group(cli, "robustness", help="Feature and model robustness across sites.")

    @group.command("run")
    @click.argument("suite", type=click.Path(dir_okay=False))
    @click.option("--out", "out", type=click.Path(file_okay=False), required=True,
                  help="Output folder for the tables (CSV) and results.json.")
    @force_option
    def run(suite: str, out: str, force: bool) -> None:
        """Run the robustness SUITE (a TOML file): leave-one-site-out validation, site
        leakage, stress tests and adversarial distances, then its checks.

        Writes tidy CSV tables and OUT/results.json; exits 1 listing the failed checks.

        \b
        Example:
          sitekit robustness run sample_data/suite/suite.toml --out robustness_results
        """
        from sitekit.robustness.suite import run_suite

        with show_warnings():
            result = run_suite(suite, out_dir=out, force=force,
                               progress=lambda step: click.echo(f"- {step}", err=True))
        print_table(result.checks[["name", "value", "op", "threshold", "passed"]],
                    title=f"Robustness checks: {result.verdict.upper()}")
        click.echo(f"Wrote {len(result.tables) + 2} files to {out}")
        result.raise_for_failure()

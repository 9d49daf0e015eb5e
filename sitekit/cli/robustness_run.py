"""`sitekit robustness run SUITE.toml --out DIR`: model robustness suites for CI."""

from __future__ import annotations

import time

import click

from sitekit.cli._common import force_option, get_or_create_group, print_table, show_warnings


def register(cli: click.Group) -> None:
    group = get_or_create_group(cli, "robustness", help="Feature and model robustness across sites.")

    @group.command("run")
    @click.argument("suite", type=click.Path(dir_okay=False))
    @click.option("--out", "out", type=click.Path(file_okay=False), required=True,
                  help="Output folder for the tables (CSV) and results.json; written whole "
                       "at the end (an interrupted run leaves no partial set).")
    @force_option
    def run(suite: str, out: str, force: bool) -> None:
        """Run the robustness SUITE (a TOML file): leave-one-site-out validation, site
        leakage, stress tests and adversarial distances, then its checks.

        The suite is checked before any work (unknown keys, columns, non-numeric cells,
        a loaded model's features).  Rows with empty cells are dropped and counted.  The
        stress baseline is the fitted model's score on the suite's own test split.
        Writes tidy CSV tables and OUT/results.json; exits 1 listing the failed checks.

        A suite whose [model] has ``kind = "onnx" | "threshold" | "python"`` tests an image
        segmentation model on a [data] manifest instead (checks worst_site_dice,
        mtv_bias_at_blur, attack_dice_drop).

        \b
        Example:
          sitekit robustness run sample_data/suite/suite.toml --out robustness_results
          sitekit robustness run sample_data/models/segmentation_suite.toml --out seg_results
        """
        from sitekit.robustness.suite import run_suite

        t0 = time.perf_counter()

        def report(message: str) -> None:
            click.echo(f"[{time.perf_counter() - t0:6.1f} s] {message}", err=True)

        with show_warnings():
            result = run_suite(suite, out_dir=out, force=force, progress=report)
        print_table(result.checks[["name", "value", "op", "threshold", "passed"]],
                    title=f"Robustness checks: {result.verdict.upper()}")
        summary, data = result.info.get("summary"), result.info["data"]
        if data.get("n_dropped"):
            click.echo(f"{data['n_dropped']} of {data['n_rows_read']} rows had empty cells "
                       "and were left out.")
        if summary:  # a feature-table suite (an image-model suite has no stress baseline)
            click.echo(f"Stress baseline {summary['scoring']} = {summary['stress_baseline']:.4g}: "
                       f"{summary['stress_baseline_data']}.")
        click.echo(f"Wrote {len(result.tables) + 2} files to {out}")
        result.raise_for_failure()

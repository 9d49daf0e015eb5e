"""`sitekit datasets ...`: synthetic multi-site data."""

from __future__ import annotations

import click

from sitekit.cli._common import force_option


def register(cli: click.Group) -> None:
    @cli.group("datasets")
    def datasets() -> None:
        """Physics-based synthetic multi-site data (phantoms, cohort, feature table)."""

    @datasets.command("generate")
    @click.option("--out", "out", type=click.Path(file_okay=False), default="sample_data", show_default=True,
                  help="Output folder.")
    @click.option("--random-state", "--seed", "random_state", type=int, default=0, show_default=True,
                  help="Seed of the generator (same value, same data); --seed is an alias.")
    @click.option("--n-per-site", type=click.IntRange(1), default=8, show_default=True,
                  help="Cohort cases per site.")
    @force_option
    def generate(out: str, random_state: int, n_per_site: int, force: bool) -> None:
        """Write phantom scans per site (with fill JSON), a lesion cohort (images, masks,
        manifest) and a multi-site feature table to OUT.

        \b
        Example:
          sitekit datasets generate --out my_data --random-state 0
        """
        from sitekit.datasets import generate_sample_data

        summary = generate_sample_data(out, seed=random_state, n_per_site=n_per_site, force=force)
        click.echo(
            f"Wrote {len(summary.get('phantoms', []))} phantom scans, {summary.get('cohort_cases', 0)} "
            f"cohort cases and a feature table to {summary['out']}"
        )

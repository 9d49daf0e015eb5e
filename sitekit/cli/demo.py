"""`sitekit demo`: the whole chain on the shipped sample data."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option("--out", "out", type=click.Path(file_okay=False), default="demo_output", show_default=True,
                  help="Folder for the demo's outputs.")
    def demo(out: str) -> None:
        """Run sitekit on the shipped sample data and print a per-site summary.

        Uses sample_data/ of the source tree; when it is missing (an installed package),
        the sample data are generated into OUT/sample_data first.
        """
        from sitekit.cli._common import print_table
        from sitekit.datasets import generate_sample_data, sample_data_dir, summarize_sample_data

        root = sample_data_dir()
        if not (root / "cohort" / "manifest.csv").exists():
            root = Path(out) / "sample_data"
            if not (root / "cohort" / "manifest.csv").exists():
                click.echo(f"Generating sample data into {root} ...")
                generate_sample_data(root, force=True)
        summary = summarize_sample_data(root)
        print_table(summary, title=f"Sample data per site ({root})")

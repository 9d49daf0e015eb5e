"""``sitekit robustness features``: per-feature robustness to image perturbations."""

from __future__ import annotations

import click

from sitekit.cli._common import (
    force_option,
    get_or_create_group,
    print_table,
    progress,
    show_warnings,
)


def register(cli: click.Group) -> None:
    """Add ``features`` to the ``robustness`` group."""
    group = get_or_create_group(cli, "robustness", help="Feature and model robustness across sites.")

    @group.command("features")
    @click.argument("manifest", type=click.Path(dir_okay=False))
    @click.option("--perturbations", "perturbations_file", required=True, type=click.Path(dir_okay=False),
                  help='Perturbation TOML file: chain = "NTCV", or [[perturbation]] tables.')
    @click.option("--n", "n", type=int, default=20, show_default=True, help="Perturbed copies per case.")
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                  help="Output folder (stability.csv, robust_features.txt, perturbations.jsonl, summary.json).")
    @click.option("--params", "params", type=click.Path(dir_okay=False), default=None,
                  help="pyradiomics parameter file (default: the shipped PET parameters).")
    @click.option("--threshold", type=float, default=0.90, show_default=True,
                  help="A feature is robust when its ICC >= threshold.")
    @click.option("--form", default="ICC(1,1)", show_default=True,
                  help="ICC form: ICC(1,1), ICC(2,1), ICC(3,1), ICC(1,k), ICC(2,k), ICC(3,k).")
    @click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
    @click.option("--random-state", "--seed", "random_state", type=int, default=0, show_default=True,
                  help="Seed of the random perturbations (same value, same copies); --seed is an alias.")
    @force_option
    def features(manifest, perturbations_file, n, out, params, threshold, form, workers, random_state,
                 force):
        """Perturb every case of MANIFEST N times, re-extract the features and report per-feature
        ICC, Koo-Li class and a robust flag (Zwanenburg et al. 2019).

        \b
        MANIFEST is a CSV with subject_id, image, mask (paths relative to the manifest).
        Example:
          sitekit robustness features manifest.csv --perturbations ntcv.toml --n 20 --out stab/
        """
        from pathlib import Path

        from sitekit.exceptions import OutputExistsError
        from sitekit.io import read_table
        from sitekit.robustness.perturbations import load_perturbations
        from sitekit.robustness.stability import OUTPUT_FILES, feature_stability

        if not force:
            existing = [str(Path(out) / f) for f in OUTPUT_FILES if (Path(out) / f).exists()]
            if existing:
                raise OutputExistsError(f"Output(s) {existing} already exist; pass --force to replace them.")
        perturbation = load_perturbations(perturbations_file)
        total = len(read_table(manifest))
        with show_warnings(), progress("Perturbing and extracting cases", total) as advance:
            result = feature_stability(manifest, perturbation, n=n, params=params, form=form,
                                       threshold=threshold, random_state=random_state, workers=workers,
                                       progress=advance)
        result.save(out, force=force)
        table = result.table
        print_table(table[["feature", "icc", "ci_low", "ci_high", "koo_li", "robust"]],
                    title=f"{form} over {n} perturbed copies of {total} cases", max_rows=20)
        click.echo(f"{int(table['robust'].sum())} of {len(table)} features robust "
                   f"({form} >= {threshold}); results in {out}")

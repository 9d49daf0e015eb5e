"""`sitekit federated ...`: ComBat across sites that share summaries, never rows."""

from __future__ import annotations

import json

import click

from sitekit.cli._common import (
    force_option,
    key_file_option,
    print_table,
    read_key_file,
    show_warnings,
    split_list,
)


def register(cli: click.Group) -> None:
    @cli.group("federated")
    def federated() -> None:
        """Federated ComBat: every site summarises its own table, a coordinator combines the
        summaries, and each site harmonises its rows locally with the resulting model.

        \b
        Round 1   (each site)    sitekit federated summarize TABLE --site-col site --out S1.npz
                  (coordinator)  sitekit federated combine S1_*.npz --out MSG1.npz
        Round 2   (each site)    sitekit federated summarize TABLE --site-col site \\
                                     --round-message MSG1.npz --out S2.npz
                  (coordinator)  sitekit federated combine S2_*.npz --round-message MSG1.npz \\
                                     --out MODEL.npz
        Apply     (each site)    sitekit harmonize apply TABLE --model MODEL.npz --out OUT.csv
        """

    @federated.command("summarize")
    @click.argument("table", type=click.Path(exists=True))
    @click.option("--site-col", required=True, help="Column holding the site label (one site per table).")
    @click.option("--covariates", default=None, help="Comma-separated covariate columns whose effects are kept.")
    @click.option("--categorical", default=None, help="Covariates to treat as categorical (default: by dtype).")
    @click.option("--continuous", default=None, help="Covariates to treat as continuous (default: by dtype).")
    @click.option("--features", default=None,
                  help="Comma-separated feature columns or glob patterns (default: every numeric "
                       "column except the site, covariates and id- or label-like columns).")
    @click.option("--exclude", default=None, help="Comma-separated columns or patterns that are not features.")
    @click.option("--round-message", "round_message", type=click.Path(exists=True, dir_okay=False),
                  default=None, help="The coordinator's round-1 message (makes the round-2 summary).")
    @click.option("--min-site-size", type=click.IntRange(2), default=10, show_default=True,
                  help="Refuse to summarise a site with fewer samples.")
    @click.option("--min-cell-size", type=click.IntRange(2), default=5, show_default=True,
                  help="Privacy rule: every released sum covers 0 or at least this many samples "
                       "(per covariate level, per feature's observed and missing values).")
    @click.option("--out", "out", required=True, type=click.Path(),
                  help="Summary file to send to the coordinator (.npz).")
    @key_file_option
    @force_option
    def summarize(table, site_col, covariates, categorical, continuous, features, exclude,
                  round_message, min_site_size, min_cell_size, out, key_file, force) -> None:
        """Compute this site's aggregates for one round and print exactly what they contain.

        No row of TABLE leaves the site: the summary holds sums over the site's samples
        (design cross-products in round 1, residual sums in round 2), each over 0 or at least
        --min-cell-size samples, and no array has one entry per sample.

        \b
        Example:
          sitekit federated summarize site_a.csv --site-col site --covariates age,sex --out a1.npz
        """
        from sitekit.harmonize.federated import describe_summary, summarize_table

        with show_warnings():
            summary, selection = summarize_table(
                table, site_col=site_col, out=out, covariates=split_list(covariates),
                categorical=split_list(categorical), continuous=split_list(continuous),
                features=split_list(features) or None, exclude=split_list(exclude),
                message=round_message, min_site_size=min_site_size, min_cell_size=min_cell_size,
                force=force, key=read_key_file(key_file),
            )
        if selection is not None:
            for line in selection.describe():
                click.echo(line)
        meta = summary.meta
        click.echo(
            f"Round-{meta['round']} summary of site {meta['site']!r} written to {out}. "
            "Exactly this leaves the site:"
        )
        print_table(describe_summary(summary), title="arrays (sums over the site's samples)")
        shown = {k: v for k, v in meta.items() if k != "features"}
        click.echo("metadata: " + json.dumps(shown, sort_keys=True))
        click.echo(f"features ({len(meta['features'])}): " + ", ".join(map(str, meta["features"])))

    @federated.command("combine")
    @click.argument("summaries", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--round-message", "round_message", type=click.Path(exists=True, dir_okay=False),
                  default=None, help="The round-1 message the round-2 summaries answered.")
    @click.option("--nonparametric", is_flag=True, default=None, help="Non-parametric empirical Bayes.")
    @click.option("--mean-only", "mean_only", is_flag=True, default=None, help="Adjust the location only.")
    @click.option("--no-eb", "no_eb", is_flag=True, help="No empirical-Bayes shrinkage.")
    @click.option("--ref-site", default=None, help="Reference site (its rows come back unchanged).")
    @click.option("--out", "out", required=True, type=click.Path(),
                  help="Round-1 message (after round 1) or ComBat model (after round 2), .npz.")
    @key_file_option
    @force_option
    def combine(summaries, round_message, nonparametric, mean_only, no_eb, ref_site, out, key_file,
                force) -> None:
        """Combine the site summaries of one round.

        After round 1 OUT is the message every site needs for its round-2 summary; after
        round 2 OUT is an ordinary ComBat model, equal to one fitted on the pooled table,
        that each site applies with `sitekit harmonize apply`.  Every summary is checked
        (shapes, dtypes, counts, finite values) and a corrupt one is named.

        \b
        Example:
          sitekit federated combine a1.npz b1.npz c1.npz --out msg1.npz
          sitekit federated combine a2.npz b2.npz c2.npz --round-message msg1.npz --out model.npz
        """
        from sitekit.harmonize.federated import RoundMessage, combine_files

        with show_warnings():
            result = combine_files(
                summaries, out=out, message=round_message,
                parametric=None if nonparametric is None else not nonparametric,
                mean_only=mean_only, eb=False if no_eb else None, ref_site=ref_site, force=force,
                key=read_key_file(key_file),
            )
        if isinstance(result, RoundMessage):
            click.echo(
                f"Round-1 message for {len(summaries)} sites {result.meta['sites']} written to {out}; "
                "send it to every site for its round-2 summary."
            )
        else:
            click.echo(
                f"ComBat model fitted from {len(summaries)} sites ({', '.join(map(str, result.sites_))}; "
                f"{result.n_features_in_} features) written to {out}; each site runs "
                "`sitekit harmonize apply TABLE --model` with it."
            )

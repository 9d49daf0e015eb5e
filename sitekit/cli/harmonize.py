"""`sitekit harmonize fit | apply | run`: ComBat, CovBat and NestedComBat on feature tables.

Each command parses its options, calls one library function
(:func:`sitekit.harmonize.fit_table`, :func:`~sitekit.harmonize.apply_table`,
:func:`~sitekit.harmonize.harmonize_table`) and prints what it did.  ``--out`` is always the
harmonised table; ``run`` writes the model and diagnostics beside it.
"""

from __future__ import annotations

import click

from sitekit.cli._common import (
    force_option,
    get_or_create_group,
    key_file_option,
    print_table,
    read_key_file,
    show_warnings,
    split_list,
)


def _parse_smooth(value: str | None):
    """``age`` or ``age:7,bmi`` -> ["age"] or {"age": 7, "bmi": 5} (knots per covariate)."""
    items = split_list(value)
    if not items:
        return None
    if not any(":" in it for it in items):
        return items
    out = {}
    for it in items:
        name, _, knots = it.partition(":")
        try:
            out[name.strip()] = int(knots) if knots else 5
        except ValueError:
            raise click.BadParameter(f"'{it}' is not NAME or NAME:N_KNOTS (e.g. age:7).",
                                     param_hint="--smooth") from None
    return out


def _n_components(value: str | None):
    if value is None:
        return None
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is neither a number of components (e.g. 5) nor a "
                                 "variance fraction (e.g. 0.95).", param_hint="--n-components") from None


def _fit_options(kw: dict) -> dict:
    """The library keyword arguments of the options shared by fit and run."""
    nonparametric, mean_only = kw.pop("nonparametric"), kw.pop("mean_only")
    if nonparametric and mean_only:
        raise click.UsageError("Use either --nonparametric or --mean-only, not both.")
    return {
        "site_col": kw.pop("site_col"),
        "covariates": split_list(kw.pop("covariates")),
        "categorical": split_list(kw.pop("categorical")),
        "continuous": split_list(kw.pop("continuous")),
        "features": split_list(kw.pop("features")) or None,
        "exclude": split_list(kw.pop("exclude")),
        "method": kw.pop("method"),
        "batch_cols": split_list(kw.pop("batch_cols")),
        "smooth": _parse_smooth(kw.pop("smooth")),
        "target_site": kw.pop("target_site"),
        "n_components": _n_components(kw.pop("n_components")),
        "ref_site": kw.pop("ref_site"),
        "parametric": not nonparametric,
        "mean_only": mean_only,
        "eb": not kw.pop("no_eb"),
    }


_COMMON = [
    click.option("--site-col", default=None,
                 help="Column holding the site (scanner/centre) label (required unless --method nested)."),
    click.option("--covariates", default=None,
                 help="Comma-separated covariate columns whose effects are kept (e.g. age,sex)."),
    click.option("--categorical", default=None,
                 help="Covariates to one-hot encode (default: detected from the column type)."),
    click.option("--continuous", default=None,
                 help="Covariates to use as numbers (default: detected from the column type)."),
    click.option("--ref-site", default=None, help="Reference site: left unchanged, others mapped onto it."),
    click.option("--nonparametric", is_flag=True, help="Non-parametric empirical Bayes."),
    click.option("--mean-only", is_flag=True, help="Adjust the location only, not the scale."),
    click.option("--no-eb", is_flag=True, help="No empirical-Bayes shrinkage (plain location/scale)."),
    click.option("--features", default=None,
                 help="Comma-separated feature columns or glob patterns (e.g. 'original_*'). "
                      "Default: every numeric column except the site, covariates, and id- or "
                      "label-like columns (id/*_id, binary, integer with few values), which are "
                      "listed when left out."),
    click.option("--exclude", default=None,
                 help="Comma-separated columns or glob patterns that are not features."),
    click.option("--method", type=click.Choice(["combat", "covbat", "nested"]), default="combat",
                 show_default=True,
                 help="combat; covbat (also harmonise the site covariance); nested (several batch "
                      "variables in sequence, best order; needs --batch-cols)."),
    click.option("--smooth", default=None,
                 help="ComBat-GAM: covariates with a spline (nonlinear) effect, e.g. age or age:7 "
                      "(7 knots); outside the training range the curve continues linearly."),
    click.option("--target-site", default=None,
                 help="M-ComBat: map every site onto this site's location and scale."),
    click.option("--batch-cols", default=None,
                 help="--method nested: comma-separated batch columns (e.g. vendor,recon)."),
    click.option("--n-components", default=None,
                 help="--method covbat: principal components to harmonise, an int or a variance "
                      "fraction such as 0.95 (default 0.95)."),
]

_READ = [
    click.option("--sep", default=None,
                 help="Field separator of a CSV TABLE (default ',' for .csv, a tab for .tsv), "
                      "e.g. --sep ';' for a semicolon export."),
    click.option("--decimal", default=".", show_default=True,
                 help="Decimal mark of a CSV TABLE, e.g. --decimal , for decimal commas."),
]

_SCALE = [
    click.option("--scheduler", default=None,
                 help="Address of a dask scheduler (tcp://host:8786): a Parquet TABLE (file or "
                      "directory) is harmonised out-of-core on that cluster."),
    click.option("--workers", type=click.IntRange(1), default=None,
                 help="Like --scheduler, on a LocalCluster of N worker processes started here."),
]


def _options(options):
    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn
    return deco


def _cluster(scheduler, workers, *, plain: bool = True) -> None:
    """With --scheduler/--workers: run the command on a dask cluster, showing its progress."""
    if not (scheduler or workers):
        return
    if not plain:
        raise click.UsageError("--scheduler/--workers run plain ComBat (no --method, --adapt).")
    from sitekit.harmonize import dask_cluster

    def compute(client, objs):
        from distributed import progress

        futures = client.compute(objs)
        progress(futures)
        click.echo("", err=True)
        return client.gather(futures)

    ctx = click.get_current_context()
    client = ctx.with_resource(dask_cluster(scheduler=scheduler, workers=workers, compute=compute))
    click.echo(f"dask: {len(client.scheduler_info()['workers'])} workers at "
               f"{client.scheduler.address}", err=True)


def _echo_selection(result) -> None:
    if result.selection is not None:
        for line in result.selection.describe():
            click.echo(line)


def register(cli: click.Group) -> None:
    group = get_or_create_group(
        cli, "harmonize",
        help="ComBat harmonisation of feature tables (CSV, TSV, Parquet) across sites.\n\n"
             "\b\nfit    learn the site effects and save the model (.npz)\n"
             "apply  remove them from a table with a saved model (--out TABLE)\n"
             "run    fit and apply in one go (--out TABLE; model and diagnostics beside it)",
    )

    @group.command("fit")
    @click.argument("table", type=click.Path(exists=True))
    @_options(_COMMON + _READ + _SCALE)
    @click.option("--model", "model_path", required=True, type=click.Path(),
                  help="Where to save the fitted model (.npz, no pickle).")
    @key_file_option
    @force_option
    def fit_cmd(table, model_path, key_file, force, scheduler, workers, sep, decimal, **kw) -> None:
        """Fit on TABLE and save the model.

        \b
        Example:
          sitekit harmonize fit features.csv --site-col site --covariates age,sex --model combat.npz
          sitekit harmonize fit features_parquet/ --site-col site --workers 4 --model combat.npz
        """
        from sitekit.harmonize import fit_summary, fit_table

        options = _fit_options(kw)
        _cluster(scheduler, workers, plain=options["method"] == "combat")
        with show_warnings():
            res = fit_table(table, model_path=model_path, force=force, key=read_key_file(key_file),
                            sep=sep, decimal=decimal, **options)
        _echo_selection(res)
        print_table(fit_summary(res.model), title=f"{type(res.model).__name__} fitted on "
                    f"{res.n_rows} rows x {len(res.selection.features)} features")
        click.echo(f"Model saved to {model_path}")

    @group.command("apply")
    @click.argument("table", type=click.Path(exists=True))
    @click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
                  help="A model saved by `sitekit harmonize fit` (or run).")
    @click.option("--out", "out", required=True, type=click.Path(),
                  help="The harmonised table (.csv, .tsv or .parquet).")
    @click.option("--site-col", default=None, help="Site column (default: the one recorded in the model).")
    @click.option("--covariates", default=None,
                  help="Covariate columns (default: the ones recorded in the model).")
    @click.option("--adapt", is_flag=True,
                  help="Sites (batch levels) the model has not seen are estimated from their own "
                       "rows against the frozen model (at least 2 rows each; < 20 warns).")
    @click.option("--model-out", default=None, type=click.Path(),
                  help="With --adapt: save the adapted model here (.npz).")
    @_options(_READ + _SCALE)
    @key_file_option
    @force_option
    def apply_cmd(table, model_path, out, site_col, covariates, adapt, model_out, scheduler, workers,
                  sep, decimal, key_file, force) -> None:
        """Harmonise TABLE with a saved model; other columns pass through unchanged and in order.

        \b
        Example:
          sitekit harmonize apply new_scans.csv --model combat.npz --out new_scans_harmonized.csv
          sitekit harmonize apply new_site.csv --model combat.npz --adapt --model-out adapted.npz \\
              --out new_site_harmonized.csv
        """
        from sitekit.harmonize import apply_table

        if model_out and not adapt:
            raise click.UsageError("--model-out is for --adapt (it saves the adapted model).")
        _cluster(scheduler, workers, plain=not adapt)
        with show_warnings():
            res = apply_table(table, model=model_path, out=out, site_col=site_col,
                              covariates=split_list(covariates) or None, adapt=adapt,
                              model_out=model_out, force=force, key=read_key_file(key_file),
                              sep=sep, decimal=decimal)
        if adapt:
            click.echo(f"Adapted the model to {len(res.new_sites)} new site(s): "
                       f"{', '.join(map(str, res.new_sites))}" if res.new_sites
                       else "No new sites in the table; the model is used as it is.")
        if model_out:
            click.echo(f"Adapted model saved to {model_out}")
        click.echo(f"Harmonised {res.n_rows} rows x {res.model.n_features_in_} features -> {out}")

    @group.command("run")
    @click.argument("table", type=click.Path(exists=True))
    @_options(_COMMON + _READ + _SCALE)
    @click.option("--out", "out", required=True, type=click.Path(),
                  help="The harmonised table (.csv, .tsv or .parquet). The model and diagnostics "
                       "go beside it (<stem>.model.npz, <stem>.diagnostics.json) unless "
                       "--model/--diagnostics say otherwise.")
    @click.option("--model", "model_path", default=None, type=click.Path(),
                  help="Where to save the model (.npz; default beside --out).")
    @click.option("--diagnostics", "diagnostics_path", default=None, type=click.Path(),
                  help="Where to save the diagnostics (.json; default beside --out).")
    @key_file_option
    @force_option
    def run_cmd(table, out, model_path, diagnostics_path, key_file, force, scheduler, workers,
                sep, decimal, **kw) -> None:
        """Fit on TABLE and harmonise it, writing one result set:

        \b
          OUT                          the table, features harmonised, every other
                                       column unchanged and in order
          <OUT stem>.model.npz         the fitted model (for `sitekit harmonize apply`)
          <OUT stem>.diagnostics.json  sites, parameters, priors, per-site estimates and
                                       the checksums of the two files (read by `sitekit report`)

        The set is written whole: an interrupted run leaves the old set or the new one.

        \b
        Example:
          sitekit harmonize run features.csv --site-col site --covariates age,sex \\
              --out harmonized/features_harmonized.csv
        """
        from sitekit.harmonize import fit_summary, harmonize_table

        options = _fit_options(kw)
        _cluster(scheduler, workers, plain=options["method"] == "combat")
        with show_warnings():
            res = harmonize_table(table, out=out, model_path=model_path,
                                  diagnostics_path=diagnostics_path, force=force,
                                  key=read_key_file(key_file), sep=sep, decimal=decimal, **options)
        _echo_selection(res)
        print_table(fit_summary(res.model), title=f"{type(res.model).__name__} on {res.n_rows} rows "
                    f"x {len(res.selection.features)} features")
        click.echo(f"Wrote {res.paths['table']}, {res.paths['model']} and {res.paths['diagnostics']}")

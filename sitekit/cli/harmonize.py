"""`sitekit harmonize fit | apply | run`: ComBat on CSV/TSV/Parquet tables.

Beyond plain ComBat (issue 8): ``--method covbat|nested``, ``--smooth`` (ComBat-GAM),
``--target-site`` (M-ComBat), ``--batch-cols`` (NestedComBat) and ``apply --adapt`` for sites
the model has never seen (``--model-out`` saves the adapted model).
"""

from __future__ import annotations

import click

from sitekit.cli._common import (
    feature_columns,
    force_option,
    get_or_create_group,
    print_table,
    show_warnings,
    split_list,
)

#: model-file metadata key under which the CLI records its column choices
_CLI_KEY = "cli"


def _params(ref_site, nonparametric: bool, mean_only: bool, no_eb: bool, categorical, continuous) -> dict:
    return {
        "parametric": not nonparametric,
        "mean_only": mean_only,
        "eb": not no_eb,
        "ref_site": ref_site,
        "categorical": split_list(categorical) or None,
        "continuous": split_list(continuous) or None,
    }


def _fit(table: str, site_col: str, covariates, categorical, continuous, ref_site, nonparametric,
         mean_only, no_eb, features, exclude, ext=None):
    """Read the table and fit the model; return (df, model, features, covariate columns)."""
    from sitekit.harmonize._dask import read_table  # lazy dask DataFrame in a --workers session

    ext = _check_ext(ext or {}, site_col, ref_site)
    df = read_table(table)
    covs = split_list(covariates)
    for c in split_list(categorical) + split_list(continuous) + list(ext["smooth"] or []):
        if c not in covs:
            covs.append(c)
    batch_cols = ext["batch_cols"]
    if batch_cols:  # nested: the batch columns play the part of the site column
        feats = feature_columns(df, batch_cols[0], covs, split_list(features),
                                 split_list(exclude) + batch_cols[1:])
    else:
        feats = feature_columns(df, site_col, covs, split_list(features), split_list(exclude))
    # --ref-site is text; ComBat matches it to integer site labels as well
    model = _make_model(_params(ref_site, nonparametric, mean_only, no_eb, categorical, continuous), ext)
    cov_df = df[covs] if covs else None
    if batch_cols:
        model.fit(df[feats], batches=df[batch_cols], covariates=cov_df)
    else:
        model.fit(df[feats], sites=df[site_col], covariates=cov_df)
    return df, model, feats, covs


def _parse_smooth(value: str | None):
    """``age`` or ``age:7,bmi`` -> ["age"] or {"age": 7, "bmi": 5} (knots per covariate)."""
    from sitekit.exceptions import ValidationError

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
            raise ValidationError(
                f"--smooth: '{it}' is not NAME or NAME:N_KNOTS (e.g. age:7)."
            ) from None
    return out


def _check_ext(ext: dict, site_col, ref_site) -> dict:
    """Validate the extension flags; return them normalised."""
    method = ext.get("method") or "combat"
    batch_cols = split_list(ext.get("batch_cols"))
    n_components = ext.get("n_components")
    out = {
        "method": method,
        "smooth": _parse_smooth(ext.get("smooth")),
        "target_site": ext.get("target_site"),
        "batch_cols": batch_cols,
        "n_components": n_components,
    }
    if method == "nested":
        if not batch_cols:
            raise click.UsageError("--method nested needs --batch-cols (e.g. --batch-cols vendor,recon).")
        if ref_site or out["target_site"]:
            raise click.UsageError("--ref-site/--target-site do not apply to --method nested.")
    else:
        if batch_cols:
            raise click.UsageError("--batch-cols is for --method nested.")
        if not site_col:
            raise click.UsageError("Missing option '--site-col' (the column holding the site).")
    if n_components is not None and method != "covbat":
        raise click.UsageError("--n-components is for --method covbat.")
    if method == "covbat" and out["target_site"]:
        raise click.UsageError("--target-site is not available with --method covbat; use --ref-site.")
    return out


def _make_model(params: dict, ext: dict):
    """The estimator for ``--method`` with the shared ComBat parameters."""
    from sitekit.harmonize import ComBat, CovBat, NestedComBat

    if ext["smooth"] is not None:
        params = {**params, "smooth": ext["smooth"]}
    if ext["method"] == "covbat":
        n = ext["n_components"]
        if n is not None:
            n = float(n) if "." in str(n) else int(n)
        return CovBat(**params, **({} if n is None else {"n_components": n}))
    if ext["method"] == "nested":
        params.pop("ref_site", None)
        return NestedComBat(batch_cols=ext["batch_cols"], **params)
    return ComBat(**params, target_site=ext["target_site"])


def _load_model(path):
    """Load a ComBat, CovBat or NestedComBat model file (the file says which)."""
    from sitekit.harmonize import load

    return load(path)


def _new_sites(df, model, site_col: str) -> list:
    """Sites (or batch levels) of ``df`` that ``model`` has not seen."""
    from sitekit.harmonize import NestedComBat

    if isinstance(model, NestedComBat):
        new = []
        for col, step in zip(model.order_, model.steps_):
            known = {str(s) for s in step.sites_}
            new += [f"{col}={v}" for v in df[col].astype(str).unique() if v not in known]
        return new
    known = {str(s) for s in model.sites_}
    return [v for v in df[site_col].astype(str).unique() if v not in known]


def _adapt(df, model, site_col: str, covs: list[str]):
    """Adapt ``model`` to the sites of ``df`` it has not seen (a new model)."""
    from sitekit.harmonize import NestedComBat

    feats = [str(f) for f in model.feature_names_in_]
    cov_df = df[covs] if covs else None
    if isinstance(model, NestedComBat):
        return model.adapt(df[feats], batches=df[model.batch_cols_], covariates=cov_df)
    known = {str(s) for s in model.sites_}
    rows = ~df[site_col].astype(str).isin(known)
    return model.adapt(df.loc[rows, feats], sites=df.loc[rows, site_col],
                       covariates=None if cov_df is None else cov_df.loc[rows])


def _covariate_names(model) -> list:
    from sitekit.harmonize import CovBat, NestedComBat

    if isinstance(model, CovBat):
        model = model.combat_
    elif isinstance(model, NestedComBat):
        model = model.steps_[0]
    names = [c["name"] for c in model.covariate_encoding_["columns"]]
    return names + [n for n in (getattr(model, "smooth_", None) or {}) if n not in names]


def _apply(df, model, site_col: str, covs: list[str]):
    """Harmonise the model's feature columns of ``df``; every other column passes through."""
    from sitekit.exceptions import ValidationError
    from sitekit.harmonize import NestedComBat

    feats = [str(f) for f in getattr(model, "feature_names_in_", [])]
    nested = isinstance(model, NestedComBat)
    ids = list(model.batch_cols_) if nested else [site_col]
    missing = [c for c in [*ids, *feats, *covs] if c not in df.columns]
    if missing:
        raise ValidationError(
            f"Column(s) {missing} that the model needs are not in the table; its columns are "
            f"{list(df.columns)[:20]}."
        )
    from sitekit.harmonize import _dask

    if _dask.is_dask_collection(df):  # lazy, one task per partition
        return _dask.transform_frame(model, df, site_col=site_col, covariate_cols=covs, features=feats)
    if nested:
        harmonised = model.transform(df[feats], batches=df[ids], covariates=df[covs] if covs else None)
    else:
        harmonised = model.transform(df[feats], sites=df[site_col], covariates=df[covs] if covs else None)
    out = df.copy()
    out[feats] = harmonised
    return out


def _check_output(path, *, force: bool, inputs=()) -> None:
    """Refuse, before any work, an existing output (without --force) or one that is an input."""
    import os
    from pathlib import Path

    from sitekit.exceptions import OutputExistsError

    target = Path(path)
    for inp in inputs:
        if target.exists() and os.path.samefile(inp, target):
            raise OutputExistsError(f"Output '{target}' is also an input of this run; choose another path.")
    if target.exists() and not force:
        raise OutputExistsError(f"Output '{target}' already exists; pass --force to replace it.")


def _cli_metadata(site_col: str, covs: list[str]) -> dict:
    return {_CLI_KEY: {"site_col": site_col, "covariates": covs}}


def _summary(model):
    from sitekit.harmonize import CovBat, NestedComBat

    if isinstance(model, NestedComBat):
        return model.order_scores_
    if isinstance(model, CovBat):
        model = model.combat_
    pri = model.priors_
    cols = ["site", "n_samples", "n_features_used", "gamma_bar", "tau2", "eb", "mean_only"]
    return pri[cols]


def _diagnostics(model, *, table: str, site_col: str, covs: list[str], feats: list[str]) -> dict:
    """Plain-JSON diagnostics of a fit (what a report plots: priors and per-site estimates)."""
    import numpy as np

    from sitekit.harmonize import CovBat, NestedComBat

    if isinstance(model, CovBat):
        diag = _diagnostics(model.combat_, table=table, site_col=site_col, covs=covs, feats=feats)
        diag.update({
            "method": "covbat",
            "params": dict(model.get_params()),
            "n_components": int(model.n_components_),
            "explained_variance_ratio": [float(v) for v in model.explained_variance_ratio_],
        })
        return diag
    if isinstance(model, NestedComBat):
        steps = [
            _diagnostics(step, table=table, site_col=col, covs=covs, feats=feats)
            for col, step in zip(model.order_, model.steps_)
        ]
        diag = dict(steps[0])
        diag.update({
            "method": "nested",
            "params": dict(model.get_params()),
            "batch_cols": list(model.batch_cols_),
            "order": list(model.order_),
            "order_scores": model.order_scores_.to_dict(orient="records"),
            "steps": steps,
        })
        return diag

    def arr(a):
        a = np.asarray(a, dtype=float)
        return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.atleast_2d(a)]

    pri = model.priors_.copy()
    records = []
    for rec in pri.to_dict(orient="records"):
        records.append({
            k: (None if isinstance(v, float) and not np.isfinite(v) else
                v.item() if hasattr(v, "item") else v)
            for k, v in rec.items()
        })
    from pathlib import Path

    from sitekit import __version__
    from sitekit.io import file_hash

    return {
        "tool": "sitekit harmonize run",
        "sitekit_version": __version__,
        "input": str(Path(table).resolve()),
        "input_sha256": file_hash(table),
        "site_col": site_col,
        "covariates": covs,
        "covariate_columns": model.covariate_columns_,
        "features": feats,
        "params": {k: v for k, v in model.get_params().items()},
        "sites": [s.item() if hasattr(s, "item") else s for s in model.sites_],
        "priors": records,
        "estimates": {
            "gamma_hat": arr(model.gamma_hat_),
            "delta_hat": arr(model.delta_hat_),
            "gamma_star": arr(model.gamma_star_),
            "delta_star": arr(model.delta_star_),
        },
        "adjusted_cells": int(np.asarray(model.adjusted_).sum()),
        "method": "combat",
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
                 help="Comma-separated feature columns (default: every numeric column that is not "
                      "the site, a covariate or an id column)."),
    click.option("--exclude", default=None, help="Comma-separated numeric columns that are not features."),
    click.option("--method", type=click.Choice(["combat", "covbat", "nested"]), default="combat",
                 show_default=True,
                 help="combat; covbat (also harmonise the site covariance); nested (several batch "
                      "variables in sequence, best order; needs --batch-cols)."),
    click.option("--smooth", default=None,
                 help="ComBat-GAM: covariates with a spline (nonlinear) effect, e.g. age or age:7 "
                      "(7 knots); outside the training range the curve continues linearly."),
    click.option("--target-site", default=None,
                 help="M-ComBat: map every site onto this site's location and scale (fitted on all "
                      "sites; unlike --ref-site, which takes the model from the reference rows)."),
    click.option("--batch-cols", default=None,
                 help="--method nested: comma-separated batch columns (e.g. vendor,recon)."),
    click.option("--n-components", default=None,
                 help="--method covbat: principal components to harmonise, an int or a variance "
                      "fraction such as 0.95 (default 0.95)."),
]


#: --scheduler/--workers: the dask engine for Parquet tables (sitekit.harmonize._dask)
_SCALE = [
    click.option("--scheduler", default=None,
                 help="Address of a dask scheduler (tcp://host:8786): a Parquet TABLE (file or "
                      "directory) is harmonised out-of-core on that cluster."),
    click.option("--workers", type=click.IntRange(1), default=None,
                 help="Like --scheduler, on a LocalCluster of N worker processes started here."),
]


def _scale_session(scheduler, workers, *, method: str = "combat", adapt: bool = False) -> None:
    """With --scheduler/--workers: a dask cluster for this command, with dask's progress."""
    if not (scheduler or workers):
        return
    if method != "combat" or adapt:
        raise click.UsageError("--scheduler/--workers run plain ComBat (no --method, --adapt).")
    from sitekit.harmonize import _dask

    ctx = click.get_current_context()
    client = ctx.with_resource(_dask.session(scheduler=scheduler, workers=workers))

    def compute(objs):
        from distributed import progress

        futures = client.compute(objs)
        progress(futures)
        click.echo("", err=True)
        return client.gather(futures)

    ctx.with_resource(_dask.progress_callback(compute))
    click.echo(f"dask: {len(client.scheduler_info()['workers'])} workers at "
               f"{client.scheduler.address}", err=True)


def _common_options(fn):
    for opt in reversed(_COMMON + _SCALE):
        fn = opt(fn)
    return fn


def _check_flags(nonparametric: bool, mean_only: bool) -> None:
    if nonparametric and mean_only:
        raise click.UsageError("Use either --nonparametric or --mean-only, not both.")


def register(cli: click.Group) -> None:
    group = get_or_create_group(
        cli, "harmonize",
        help="ComBat harmonisation of feature tables (CSV, TSV, Parquet) across sites.\n\n"
             "\b\nfit    learn the site effects and save the model (.npz)\n"
             "apply  remove them from a table with a saved model\n"
             "run    fit and apply in one go, writing table, model and diagnostics",
    )

    @group.command("fit")
    @click.argument("table", type=click.Path(exists=True))
    @_common_options
    @click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
                  help="Where to save the fitted model (.npz, no pickle).")
    @force_option
    def fit_cmd(table, site_col, covariates, categorical, continuous, ref_site, nonparametric,
                mean_only, no_eb, features, exclude, model_path, force, **ext) -> None:
        """Fit ComBat on TABLE and save the model.

        \b
        Example:
          sitekit harmonize fit features.csv --site-col site --covariates age,sex --model combat.npz
          sitekit harmonize fit features_parquet/ --site-col site --workers 4 --model combat.npz
        """
        _check_flags(nonparametric, mean_only)
        _scale_session(ext.pop("scheduler"), ext.pop("workers"), method=ext.get("method") or "combat")
        with show_warnings():
            df, model, feats, covs = _fit(table, site_col, covariates, categorical, continuous,
                                          ref_site, nonparametric, mean_only, no_eb, features, exclude,
                                          ext)
            model.save(model_path, force=force, metadata=_cli_metadata(site_col, covs))
        print_table(_summary(model),
                    title=f"{type(model).__name__} fitted on {len(df)} rows x {len(feats)} features")
        click.echo(f"Model saved to {model_path}")

    @group.command("apply")
    @click.argument("table", type=click.Path(exists=True))
    @click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
                  help="A model saved by `sitekit harmonize fit` (or run).")
    @click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
                  help="Output table (.csv, .tsv or .parquet).")
    @click.option("--site-col", default=None, help="Site column (default: the one recorded in the model).")
    @click.option("--covariates", default=None,
                  help="Covariate columns (default: the ones recorded in the model).")
    @click.option("--adapt", is_flag=True,
                  help="Sites (batch levels) the model has not seen are estimated from their own "
                       "rows against the frozen model (at least 2 rows each; < 20 warns).")
    @click.option("--model-out", default=None, type=click.Path(dir_okay=False),
                  help="With --adapt: save the adapted model here.")
    @_SCALE[0]
    @_SCALE[1]
    @force_option
    def apply_cmd(table, model_path, out, site_col, covariates, adapt, model_out, scheduler, workers,
                  force) -> None:
        """Harmonise TABLE with a saved model; other columns pass through unchanged and in order.

        \b
        Example:
          sitekit harmonize apply new_scans.csv --model combat.npz --out new_scans_harmonized.csv
          sitekit harmonize apply new_site.csv --model combat.npz --adapt --model-out adapted.npz \\
              --out new_site_harmonized.csv
        """
        from sitekit.exceptions import ValidationError
        from sitekit.harmonize import NestedComBat
        from sitekit.harmonize._dask import read_table, write_table  # dask-aware (--workers)

        _scale_session(scheduler, workers, adapt=adapt)
        if model_out and not adapt:
            raise click.UsageError("--model-out is for --adapt (it saves the adapted model).")
        model = _load_model(model_path)
        recorded = model.file_metadata_.get("extra", {}).get(_CLI_KEY, {})
        site_col = site_col or recorded.get("site_col")
        if not site_col and not isinstance(model, NestedComBat):
            raise ValidationError(
                f"Model '{model_path}' does not record its site column; pass --site-col."
            )
        covs = split_list(covariates) if covariates else list(recorded.get(
            "covariates", _covariate_names(model)))
        if not hasattr(model, "feature_names_in_"):
            raise ValidationError(
                f"Model '{model_path}' was fitted without column names; fit it from a table."
            )
        _check_output(out, force=force, inputs=(table,))
        if model_out:
            _check_output(model_out, force=force, inputs=(table, model_path))
        df = read_table(table)
        with show_warnings():
            if adapt:
                new = _new_sites(df, model, site_col)
                if new:
                    model = _adapt(df, model, site_col, covs)
                    click.echo(f"Adapted the model to {len(new)} new site(s): {', '.join(map(str, new))}")
                else:
                    click.echo("No new sites in the table; the model is used as it is.")
            result = _apply(df, model, site_col, covs)
        write_table(result, out, force=True)
        if model_out:
            model.save(model_out, force=True, metadata=_cli_metadata(site_col, covs))
            click.echo(f"Adapted model saved to {model_out}")
        click.echo(f"Harmonised {len(df)} rows x {model.n_features_in_} features -> {out}")

    @group.command("run")
    @click.argument("table", type=click.Path(exists=True))
    @_common_options
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                  help="Output folder: harmonized.<ext>, model.npz, diagnostics.json.")
    @click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False),
                  help="Also save the model here (it is always written to OUT/model.npz).")
    @force_option
    def run_cmd(table, site_col, covariates, categorical, continuous, ref_site, nonparametric,
                mean_only, no_eb, features, exclude, out, model_path, force, **ext) -> None:
        """Fit ComBat on TABLE and harmonise it, writing to the folder OUT:

        \b
          OUT/harmonized.<ext>   the table (same format as TABLE), features harmonised,
                                 every other column unchanged and in order
          OUT/model.npz          the fitted model (for `sitekit harmonize apply`)
          OUT/diagnostics.json   sites, parameters, priors and per-site estimates
                                 (read by `sitekit report`)

        \b
        Example:
          sitekit harmonize run features.csv --site-col site --covariates age,sex --out harmonized/
        """
        import json
        from pathlib import Path

        from sitekit.harmonize._dask import write_table  # dask-aware (--workers)
        from sitekit.io import atomic_output

        _check_flags(nonparametric, mean_only)
        _scale_session(ext.pop("scheduler"), ext.pop("workers"), method=ext.get("method") or "combat")
        out_dir = Path(out)
        suffix = Path(table).suffix.lower() if Path(table).is_file() else ".parquet"
        if suffix == ".tab":
            suffix = ".tsv"
        table_out = out_dir / f"harmonized{suffix}"
        targets = [table_out, out_dir / "model.npz", out_dir / "diagnostics.json"]
        if model_path:
            targets.append(Path(model_path))
        for t in targets:  # refuse before any work
            _check_output(t, force=force, inputs=(table,))
        with show_warnings():
            df, model, feats, covs = _fit(table, site_col, covariates, categorical, continuous,
                                          ref_site, nonparametric, mean_only, no_eb, features, exclude,
                                          ext)
            result = _apply(df, model, site_col, covs)
        meta = _cli_metadata(site_col, covs)
        write_table(result, table_out, force=True)
        model.save(out_dir / "model.npz", force=True, metadata=meta)
        if model_path:
            model.save(model_path, force=True, metadata=meta)
        diag = _diagnostics(model, table=table, site_col=site_col, covs=covs, feats=feats)
        with atomic_output(out_dir / "diagnostics.json", force=True) as tmp:
            tmp.write_text(json.dumps(diag, indent=1))
        print_table(_summary(model), title=f"{type(model).__name__} on {len(df)} rows x {len(feats)} features")
        click.echo(f"Wrote {table_out}, {out_dir / 'model.npz'} and {out_dir / 'diagnostics.json'}")

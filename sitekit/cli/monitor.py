"""`sitekit monitor init | update`: per-site control charts for a nightly job.

``init`` fits a :class:`~sitekit.monitor.SiteMonitor` on a reference table and saves its
state; ``update`` feeds new studies, saves the state again (atomically), prints the new
alarms and exits 1 when there are any.  :func:`demo_step` is the monitoring part of
``sitekit demo``.
"""

from __future__ import annotations

from pathlib import Path

import click

from sitekit.cli._common import (
    force_option,
    get_or_create_group,
    print_table,
    show_warnings,
    split_list,
)

_CLI_KEY = "cli"
_TABLE_COLUMNS = ["site", "signal", "time", "statistic", "threshold", "direction"]


def register(cli: click.Group) -> None:
    group = get_or_create_group(
        cli, "monitor",
        "Watch sites after deployment: control charts with calibrated false-alarm rates.",
    )

    @group.command("init")
    @click.argument("reference", type=click.Path(dir_okay=True))
    @click.option("--site-col", required=True, help="Column with the site of each study.")
    @click.option("--signals", required=True,
                  help="Comma-separated columns to watch; 'column:kind[:transform]' sets the kind "
                       "(feature, reference_region, model_output, performance, phantom_rc, "
                       "phantom_calibration) and transform (log, logit).")
    @click.option("--time-col", default=None, help="Column with the acquisition time of each study "
                  "(used by 'update'; default: studies are numbered in file order).")
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                  help="State folder to write.")
    @click.option("--chart", type=click.Choice(["cusum", "ewma", "westgard"]), default="cusum",
                  show_default=True)
    @click.option("--arl0", type=click.FloatRange(2), default=500.0, show_default=True,
                  help="In-control average run length (studies per false alarm) of the network.")
    @click.option("--shift", type=click.FloatRange(0, min_open=True), default=0.5,
                  show_default=True, help="Shift to detect quickest, in reference SDs.")
    @click.option("--split", type=click.Choice(["bonferroni", "none"]), default="bonferroni",
                  show_default=True, help="Share the false-alarm budget across sites and signals.")
    @click.option("--min-reference", type=click.IntRange(5), default=30, show_default=True)
    @click.option("--no-reference-correction", is_flag=True,
                  help="Do not widen thresholds for the estimation error of a short reference.")
    @click.option("--combat", "combat", type=click.Path(dir_okay=False), default=None,
                  help="A saved ComBat model whose site effects are checked for staleness.")
    @click.option("--window", type=click.IntRange(10), default=30, show_default=True,
                  help="Studies per batch-effect test (with --combat).")
    @force_option
    def init(reference, site_col, signals, time_col, out, chart, arl0, shift, split,
             min_reference, no_reference_correction, combat, window, force) -> None:
        """Fit a monitor on the REFERENCE table (CSV/TSV/Parquet) and save its state to OUT.

        \b
        Example:
          sitekit monitor init reference.csv --site-col site \\
              --signals liver_suvmean:reference_region:log,model_score:model_output:logit \\
              --time-col time --out monitor_state
        """
        from sitekit.exceptions import OutputExistsError, ValidationError
        from sitekit.io import read_table
        from sitekit.monitor import SiteMonitor

        state = Path(out) / "state.npz"
        if state.exists() and not force:
            raise OutputExistsError(f"Output '{state}' already exists; pass --force to replace it.")
        df = read_table(reference)
        if site_col not in df.columns:
            raise ValidationError(f"Site column {site_col!r} is not in '{reference}'; its columns "
                                  f"are {list(df.columns)[:20]}.")
        harmonizer = None
        if combat:
            from sitekit.harmonize import ComBat

            harmonizer = ComBat.load(combat)
        with show_warnings():
            mon = SiteMonitor(signals=split_list(signals), chart=chart, arl0=arl0, shift=shift,
                              split=split, min_reference=min_reference,
                              reference_correction=not no_reference_correction,
                              harmonizer=harmonizer, window=window).fit(df, sites=df[site_col])
        mon.save(out, force=force, metadata={_CLI_KEY: {"site_col": site_col,
                                                        "time_col": time_col, "fed": []}})
        click.echo(f"Monitor of {len(mon.sites_)} site(s) x {len(mon.signals_)} signal(s) saved "
                   f"to {out} (chart ARL0 {mon.chart_arl0_:.0f} studies after the split).")

    @group.command("update")
    @click.argument("new", type=click.Path(dir_okay=True))
    @click.option("--state", "state", required=True, type=click.Path(file_okay=False),
                  help="State folder written by 'sitekit monitor init'.")
    @click.option("--results", "results", type=click.Path(file_okay=False), default=None,
                  help="Also write the results folder for 'sitekit report' (replaced each run).")
    @click.option("--force", is_flag=True, help="Feed a table that was already fed once.")
    def update(new, state, results, force) -> None:
        """Feed the NEW studies (CSV/TSV/Parquet) to the monitor saved in STATE.

        Prints the new alarms and exits 1 when there are any (0 when none, 2 on bad input).
        The state is replaced in one step after the update: an interrupted run leaves the
        previous state, and running it again gives the same result.

        \b
        Example (nightly):
          sitekit monitor update studies_today.csv --state monitor_state --results monitor_out
        """
        from sitekit.exceptions import CheckFailedError, ValidationError
        from sitekit.io import file_hash, read_table
        from sitekit.monitor import SiteMonitor

        mon = SiteMonitor.load(state)
        cli_meta = dict(mon.saved_metadata_.get(_CLI_KEY) or {})
        site_col, time_col = cli_meta.get("site_col"), cli_meta.get("time_col")
        if not site_col:
            raise ValidationError(f"State '{state}' was not written by 'sitekit monitor init'; "
                                  "it does not name the site column.")
        digest = file_hash(new)
        fed = list(cli_meta.get("fed") or [])
        if digest in fed and not force:
            raise ValidationError(f"Table '{new}' was already fed to this monitor; pass --force "
                                  "to feed it again.")
        df = read_table(new)
        for col in [site_col] + ([time_col] if time_col else []):
            if col not in df.columns:
                raise ValidationError(f"Column {col!r} is not in '{new}'; its columns are "
                                      f"{list(df.columns)[:20]}.")
        with show_warnings():
            alarms = mon.update(df, sites=df[site_col],
                                times=df[time_col] if time_col else None)
        cli_meta["fed"] = fed + [digest]
        mon.save(state, force=True, metadata={_CLI_KEY: cli_meta})
        if results:
            mon.write_results(results, force=True)
        click.echo(f"Charted {len(df)} studies of {df[site_col].nunique()} site(s).")
        if len(alarms):
            shown = alarms[_TABLE_COLUMNS].copy()
            shown["time"] = shown["time"].astype(str).str.slice(0, 19)
            print_table(shown, title="New alarms")
            for (site, signal), g in alarms.groupby(["site", "signal"], sort=True):
                click.echo(f"{site} / {signal}: {g['suggestion'].iloc[-1]}")
            raise CheckFailedError(f"{len(alarms)} new alarm(s) at site(s) "
                                   f"{sorted(set(alarms['site']))}.")
        click.echo("No new alarms.")


def demo_step(out_dir: Path, *, random_state=0) -> Path:
    """Monitoring part of ``sitekit demo``: a study stream, a monitor, nightly updates.

    Makes a four-site stream (:func:`sitekit.datasets.make_study_stream`: a 5 % calibration
    step at ``site_C``, a scanner replacement at ``site_B``, both after 12 months), fits a
    ComBat model and a :class:`~sitekit.monitor.SiteMonitor` on the first 12 months, feeds
    the rest month by month as a nightly job would, and writes the results folder
    (``monitor.json`` marks it) and the saved state.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into; ``monitor/`` (results) and ``monitor_state/`` are created.
    random_state : int, default=0

    Returns
    -------
    pathlib.Path
        The results folder ``out_dir / "monitor"``.
    """
    import numpy as np

    from sitekit.datasets import make_study_stream
    from sitekit.harmonize import ComBat
    from sitekit.monitor import SiteMonitor

    df = make_study_stream(random_state=random_state, n_months=24, reference_months=12,
                           drift_month=12, replacement_month=12)
    feats = []
    for f in ("lesion_suvmax", "lesion_suvmean", "mtv_ml", "glcm_contrast",
              "glrlm_short_run_emphasis", "ngtdm_coarseness"):
        df[f"log_{f}"] = np.log(df[f])
        feats.append(f"log_{f}")
    ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
    model = ComBat().fit(ref[feats], sites=ref["site"])
    mon = SiteMonitor(
        signals=["liver_suvmean:reference_region:log", "lesion_suvmax:feature:log",
                 "model_score:model_output:logit", "seg_disagreement:model_output:logit"],
        harmonizer=model, window=30,
    ).fit(ref, sites=ref["site"])
    for _, batch in new.groupby("month", sort=True):
        mon.update(batch, sites=batch["site"], times=batch["time"])
    out_dir = Path(out_dir)
    mon.save(out_dir / "monitor_state", force=True)
    return mon.write_results(out_dir / "monitor", force=True)

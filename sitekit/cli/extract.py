"""``sitekit extract``: pyradiomics features for every case of a manifest."""

from __future__ import annotations

import click

from sitekit.cli._common import force_option, print_table, progress, show_warnings


class _LazyProgress:
    """A progress bar that appears with the first finished case, so that input errors found
    before any work are not printed under an empty bar."""

    def __init__(self, description: str, total: int) -> None:
        self._args = (description, total)
        self._ctx = None
        self._advance = None

    def __enter__(self):
        def advance(n: int = 1) -> None:
            if self._ctx is None:
                self._ctx = progress(*self._args)
                self._advance = self._ctx.__enter__()
            self._advance(n)

        return advance

    def __exit__(self, *exc) -> bool:
        if self._ctx is not None:
            return bool(self._ctx.__exit__(*exc))
        return False


def register(cli: click.Group) -> None:
    """Add ``sitekit extract`` to the command line."""

    @cli.command("extract")
    @click.argument("manifest", type=click.Path(dir_okay=False))
    @click.option("--out", required=True, type=click.Path(dir_okay=False),
                  help="Features table to write (.parquet). Errors go to <stem>.errors.csv.")
    @click.option("--params", type=click.Path(dir_okay=False), default=None,
                  help="pyradiomics parameter file (YAML/JSON). Default: the shipped PET file "
                       "(2 mm isotropic, bin width 0.25 SUV).")
    @click.option("--workers", type=int, default=1, show_default=True,
                  help="Local Dask worker processes (1 = run in this process).")
    @click.option("--scheduler", default=None, metavar="ADDRESS",
                  help="Use a running Dask scheduler (tcp://host:8786) instead of --workers.")
    @click.option("--resume", is_flag=True,
                  help="Skip cases already in --out or done by an interrupted run; retry failed ones.")
    @click.option("--earl-calibration", type=click.Path(), default=None, metavar="FILE",
                  help="calibration.json of `sitekit earl calibrate`: post-filter each site's images.")
    @click.option("--suv", type=click.Choice(["bw"]), default=None,
                  help="Convert images (PET DICOM series) to body-weight SUV from their headers.")
    @force_option
    def extract_command(manifest, out, params, workers, scheduler, resume, earl_calibration, suv,
                        force):
        """Extract radiomics features for every case of MANIFEST with pyradiomics.

        \b
        MANIFEST is a CSV/TSV with the columns subject_id, site, image, mask (paths
        relative to the manifest) and optionally label_value and suv; other columns are
        copied to the output. A case that fails (missing or corrupt file, geometry
        mismatch, empty mask, absent label) is listed in the errors file and the run
        goes on. An interrupted run continues with --resume, which also extracts again
        every case whose image, mask, label or filter changed since. The features table and
        the errors file are written together at the end (a killed run leaves the old ones).

        \b
        Example:
          sitekit extract sample_data/cohort/manifest.csv --out features.parquet --workers 2
        """
        from sitekit.features import extract, output_paths, read_manifest

        cases, _ = read_manifest(manifest)
        _, err_path, parts_dir = output_paths(out)
        try:
            with show_warnings(), _LazyProgress("Extracting", len(cases)) as advance:
                features, errors = extract(
                    manifest, params=params, workers=workers, scheduler=scheduler, out=out,
                    resume=resume, force=force, suv=suv, earl_calibration=earl_calibration,
                    progress=advance,
                )
        except KeyboardInterrupt:
            if parts_dir.exists():
                click.echo(f"Interrupted; the finished cases are kept in {parts_dir}. "
                           "Run the same command with --resume to continue.", err=True)
            raise click.exceptions.Abort() from None
        n_feat = sum(c.startswith("original_") for c in features.columns)
        click.echo(f"{len(features)} case(s) with {n_feat} features -> {out}")
        if len(errors):
            print_table(errors, title=f"{len(errors)} case(s) failed (also in {err_path})")
        else:
            click.echo(f"No failed cases ({err_path} is empty).")

"""``sitekit earl``: phantom accreditation (check, calibrate), the harmonising filter, cylinder QC."""

from __future__ import annotations

from pathlib import Path

import click

from sitekit.cli._common import (
    force_option,
    get_or_create_group,
    print_table,
    progress,
    show_warnings,
)

_STANDARD_CHOICE = click.Choice(["earl1", "earl2", "all"], case_sensitive=False)


def _site_names(paths, sites) -> list[str]:
    if sites:
        if len(sites) != len(paths):
            raise click.BadParameter(f"give one --site per phantom ({len(paths)}), got {len(sites)}.",
                                     param_hint="--site")
        names = list(sites)
    else:
        names = []
        for p in paths:
            n = Path(p).name
            for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
                if n.lower().endswith(suf):
                    n = n[: -len(suf)]
                    break
            names.append(n)
    from sitekit.io import safe_filename

    names = [safe_filename(n, what="site name", option="--site" if sites else "the phantom's file name")
             for n in names]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _per_scan(values, n: int, name: str) -> list:
    values = list(values)
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise click.BadParameter(f"give one {name} for all phantoms or one per phantom ({n}).", param_hint=name)
    return values


def _write_json(obj, path: Path, force: bool) -> None:
    import json

    from sitekit._json import to_jsonable
    from sitekit.io import atomic_output

    with atomic_output(path, force=force) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2))


def _result_dir(out, force: bool, marker: str, command: str) -> tuple[Path, bool]:
    """Check the output folder of a result set before any work; return (path, replace).

    The set is written to a temporary folder and moved into place whole.  An existing
    non-empty folder is replaced only with --force, and only when it holds a result set of
    the same command (``marker``): --force never deletes an unrelated folder.
    """
    from sitekit.exceptions import OutputExistsError
    from sitekit.io import remove_stale_temporaries

    outdir = Path(out)
    remove_stale_temporaries(outdir)
    if not outdir.exists():
        return outdir, False
    if not outdir.is_dir():
        raise OutputExistsError(f"--out '{outdir}' exists and is not a folder; choose a folder path.")
    if not any(outdir.iterdir()):
        return outdir, True  # an empty folder: nothing to lose
    if not force:
        raise OutputExistsError(f"--out '{outdir}' already holds files; pass --force to replace the whole "
                                f"result set, or choose a new folder.")
    if not (outdir / marker).is_file():
        raise OutputExistsError(f"--out '{outdir}' is not a result set of `sitekit earl {command}` (no {marker}); "
                                "--force only replaces those. Choose a new folder.")
    return outdir, True


def _write_png(image, path: Path, force: bool) -> None:
    import SimpleITK as sitk

    from sitekit.io import atomic_output

    with atomic_output(path, force=force) as tmp:
        sitk.WriteImage(image, str(tmp))


def _measure_all(phantoms, *, fills, sphere_conc, background_conc, centres, sites, a50_background, out):
    """Read and measure every phantom; on a localization failure write the preview beside the
    output folder (``<out>.spheres_not_found_<site>.png``) and re-raise."""
    from sitekit.exceptions import SpheresNotFoundError
    from sitekit.harmonize import earl

    if centres is not None and len(phantoms) > 1:
        raise click.BadParameter("--centres works with one phantom at a time.", param_hint="--centres")
    results = []
    for path, site, fill in zip(phantoms, sites, fills):
        image = earl.read_phantom(path)
        try:
            m = earl.measure_phantom(image, fill=fill, sphere_conc=sphere_conc, background_conc=background_conc,
                                     centres=centres, a50_background=a50_background.lower(), site=site)
        except SpheresNotFoundError as exc:
            if exc.preview is not None:
                png = out.parent / f"{out.name}.spheres_not_found_{site}.png"
                _write_png(exc.preview, png, True)
                raise SpheresNotFoundError(f"{site} ('{path}'): {exc} What the search saw: '{png}'.",
                                           preview=exc.preview, found=exc.found) from exc
            raise
        results.append((path, site, image, m))
    return results


def register(cli: click.Group) -> None:
    """Add the ``earl`` group."""
    group = get_or_create_group(cli, "earl", help="EARL phantom accreditation: check, calibrate, filter.")

    @group.command("check")
    @click.argument("phantoms", nargs=-1, required=True, type=click.Path(exists=True))
    @click.option("--standard", type=_STANDARD_CHOICE, default="earl1", show_default=True,
                  help="Standard to check against ('all': EARL1 and EARL2).")
    @click.option("--fill", "fills", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="Fill description JSON (one for all phantoms or one per phantom).")
    @click.option("--sphere-conc", type=float, help="True sphere concentration at scan start (image units).")
    @click.option("--background-conc", type=float, help="True background concentration (image units).")
    @click.option("--centres", type=click.Path(exists=True, dir_okay=False),
                  help="Manual sphere centres JSON (physical mm), skipping the automatic search.")
    @click.option("--site", "sites", multiple=True, help="Site name per phantom (default: file name).")
    @click.option("--a50-background", type=click.Choice(["measured", "known"], case_sensitive=False),
                  default="measured", show_default=True, help="Background B of the A50 threshold.")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
    @force_option
    def check_cmd(phantoms, standard, fills, sphere_conc, background_conc, centres, sites, a50_background,
                  out, force):
        """Measure phantom scans (DICOM directory, NIfTI or NRRD; one per site) and check them
        against EARL bands.

        \b
        Writes the result set OUT (a folder, written whole or not at all; an existing set is
        replaced only with --force): measurements.csv (RCs per sphere), background.csv
        (background ROIs), check.csv (tidy: site, standard, sphere_mm, metric, rc, lower,
        upper, passed, margin), verdict.csv / verdict.json (site table), spheres_<site>.png.
        Exit code 1 when a site fails a verified limit, 2 on bad input or when the spheres
        cannot be found. Without --fill or --sphere-conc the sphere concentration is
        estimated from the 37 mm sphere's blurred profile (RCs are then relative to it).

        \b
        Fill file (--fill, JSON; activities in MBq, volumes in mL, times ISO 8601, all with
        or all without a UTC offset; concentrations come out in Bq/mL at scan start):
          {"isotope": "F-18",                  # F-18, C-11, N-13, O-15, Ga-68, Cu-64,
           "half_life_s": 6586.2,              #   Rb-82, Zr-89, I-124; others need half_life_s
           "scan_start": "2026-03-02T10:00:00",
           "stated_ratio": 10.0,               # optional sphere:background ratio aimed at
           "sphere": {"activity_mbq": 2.31, "volume_ml": 100.0,
                      "measured_at": "2026-03-02T09:10:00",
                      "residual_mbq": 0.0, "residual_measured_at": null},
           "background": {"activity_mbq": 21.4, "volume_ml": 9700.0,
                          "measured_at": "2026-03-02T09:20:00"}}
        "sphere" is the stock solution the spheres were filled from. Activities must be
        measured before scan_start (at most 5 half-lives). The image must be in Bq/mL;
        --sphere-conc/--background-conc are in the image's units.

        \b
        Example:
          sitekit earl check site_A.nii.gz --fill fill_A.json --standard all --out earl_A
        """
        import pandas as pd

        from sitekit._version import __version__
        from sitekit.exceptions import CheckFailedError
        from sitekit.harmonize import earl
        from sitekit.io import atomic_directory, file_hash, write_table

        names = _site_names(phantoms, sites)
        fill_list = _per_scan(fills, len(phantoms), "--fill")
        outdir, replace = _result_dir(out, force, "verdict.json", "check")
        with show_warnings():
            results = _measure_all(phantoms, fills=fill_list, sphere_conc=sphere_conc,
                                   background_conc=background_conc, centres=centres, sites=names,
                                   a50_background=a50_background, out=outdir)
            spheres = pd.concat([m.spheres for *_, m in results], ignore_index=True)
            bkg = pd.concat([m.background.assign(site=s) for _, s, _, m in results], ignore_index=True)
            bkg = bkg[["site"] + [c for c in bkg.columns if c != "site"]]
            std = "all" if standard.lower() == "all" else standard.upper()
            chk = earl.check(spheres, standard=std)
            ver = earl.verdict(chk)
            doc = {
                "format": "sitekit-earl-check", "version": 1, "sitekit_version": __version__,
                "passed": bool(ver["passed"].all()), "standards": sorted(set(chk["standard"])),
                "sites": {s: {r.standard: {"passed": bool(r.passed), "failed": r.failed,
                                           "worst_margin": r.worst_margin,
                                           "unverified_failed": r.unverified_failed}
                              for r in ver[ver["site"] == s].itertuples()} for s in names},
                "scans": [{"site": s, "path": str(p), "sha256": file_hash(p), **m.info} for p, s, _, m in results],
            }
            # the whole set goes to a temporary folder and is moved into place at once: an
            # interrupted run leaves the old set or the new one, never a mixture
            with atomic_directory(outdir, force=replace, inputs=tuple(phantoms)) as tmp:
                write_table(spheres, tmp / "measurements.csv")
                write_table(bkg, tmp / "background.csv")
                write_table(chk, tmp / "check.csv")
                write_table(ver, tmp / "verdict.csv")
                for _, site, image, m in results:
                    _write_png(earl.preview_image(image, m.localization, background_rois=m.background_rois),
                               tmp / f"spheres_{site}.png", False)
                _write_json(doc, tmp / "verdict.json", False)
        cols = ["site", "sphere_mm", "rc_max", "rc_a50", "rc_peak", "fwhm_mm"]
        print_table(spheres[cols], title="Recovery coefficients")
        for _, s, _, m in results:
            src = m.info["conc_source"]
            unit = m.info.get("units") or "image units"
            unit = "Bq/mL" if unit.upper() in ("BQML", "BQ/ML") else unit
            click.echo(f"{s}: sphere concentration {m.info['sphere_conc']:.6g} {unit} ({src}"
                       + (", from the 37 mm sphere profile fit" if src == "estimated" else "")
                       + f"); background measured {m.info['background_measured']:.6g} {unit} "
                       f"({len(m.background_rois)} ROIs placed from the "
                       f"{'body outline in the scan' if m.info['background_placement'] == 'image' else 'template'}); "
                       f"background variability (37 mm ROIs) {m.info['background_variability_pct']['37']:.1f} %")
        print_table(ver[["site", "standard", "passed", "n_checks", "n_failed", "worst_margin"]], title="Verdict")
        click.echo(f"Outputs written to {outdir}")
        if not doc["passed"]:
            failed = ver[~ver["passed"]]
            raise CheckFailedError("; ".join(f"{r.site} fails {r.standard} ({r.failed})" for r in failed.itertuples()),
                                   result=chk)

    @group.command("calibrate")
    @click.argument("phantoms", nargs=-1, required=True, type=click.Path(exists=True))
    @click.option("--standard", type=click.Choice(["earl1", "earl2"], case_sensitive=False), default="earl1",
                  show_default=True)
    @click.option("--fill", "fills", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="Fill description JSON (one for all phantoms or one per phantom).")
    @click.option("--sphere-conc", type=float, help="True sphere concentration at scan start (image units).")
    @click.option("--background-conc", type=float, help="True background concentration (image units).")
    @click.option("--centres", type=click.Path(exists=True, dir_okay=False), help="Manual sphere centres JSON.")
    @click.option("--site", "sites", multiple=True, help="Site name per phantom (default: file name).")
    @click.option("--max-fwhm", type=float, default=14.0, show_default=True, help="Largest filter FWHM tried (mm).")
    @click.option("--step", type=float, default=0.5, show_default=True, help="FWHM step of the sweep (mm).")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
    @force_option
    def calibrate_cmd(phantoms, standard, fills, sphere_conc, background_conc, centres, sites, max_fwhm, step,
                      out, force):
        """Find each site's harmonising Gaussian post-filter for a standard.

        \b
        Writes to OUT: calibration.json (per site: smallest_fwhm_mm, centre_fwhm_mm,
        chosen_fwhm_mm; read it with sitekit.harmonize.earl.read_calibration), curves.csv
        (RC vs filter FWHM per sphere and metric, with bands) and calibration.csv.

        \b
        Example:
          sitekit earl calibrate site_A.nii.gz --fill site_A_fill.json --standard earl1 --out calib/
        """
        import numpy as np
        import pandas as pd

        from sitekit.exceptions import ValidationError
        from sitekit.harmonize import earl
        from sitekit.harmonize.earl import MAX_FWHM_MM
        from sitekit.io import atomic_directory, write_table

        if not (step >= 0.05 and step < max_fwhm <= MAX_FWHM_MM):
            raise ValidationError(f"--step must be at least 0.05 mm and --max-fwhm between --step and "
                                  f"{MAX_FWHM_MM:g} mm (harmonising filters are 0-15 mm); got --step {step:g}, "
                                  f"--max-fwhm {max_fwhm:g}.")
        names = _site_names(phantoms, sites)
        fill_list = _per_scan(fills, len(phantoms), "--fill")
        if centres is not None and len(phantoms) > 1:
            raise click.BadParameter("--centres works with one phantom at a time.", param_hint="--centres")
        outdir, replace = _result_dir(out, force, "calibration.json", "calibrate")
        grid = np.round(np.arange(0.0, max_fwhm + 1e-9, step), 4)
        results = []
        with show_warnings():
            for path, site, fill in zip(phantoms, names, fill_list):
                image = earl.read_phantom(path)
                with progress(f"{site}: filter sweep", len(grid)) as advance:
                    res = earl.calibrate(image, standard=standard.upper(), fill=fill, sphere_conc=sphere_conc,
                                         background_conc=background_conc, centres=centres, fwhm_grid=grid,
                                         site=site, progress=advance)
                results.append(res)
            doc = earl.calibration_json(results)
            curves = pd.concat([r.curves for r in results], ignore_index=True)
            summary = pd.DataFrame([{"site": r.site, "standard": r.standard, "smallest_fwhm_mm": r.smallest_fwhm,
                                     "centre_fwhm_mm": r.centre_fwhm, "chosen_fwhm_mm": r.chosen_fwhm,
                                     "reachable": r.reachable, "note": r.note} for r in results])
            with atomic_directory(outdir, force=replace, inputs=tuple(phantoms)) as tmp:
                _write_json(doc, tmp / "calibration.json", False)
                write_table(curves, tmp / "curves.csv")
                write_table(summary, tmp / "calibration.csv")
        print_table(summary.drop(columns=["note"]), title=f"Harmonising filter ({standard.upper()})")
        for r in results:
            click.secho(f"{r.site}: {r.note}", fg=None if r.reachable else "yellow")
        click.echo(f"Outputs written to {outdir}")

    @group.command("filter")
    @click.argument("image", type=click.Path(exists=True))
    @click.option("--fwhm", type=float, help="Gaussian FWHM in mm.")
    @click.option("--calibration", type=click.Path(exists=True),
                  help="calibration.json (or its directory) to take the FWHM from, with --site.")
    @click.option("--site", help="Site whose chosen FWHM to apply (with --calibration).")
    @click.option("--out", required=True, type=click.Path(), help="Output image (NIfTI/NRRD) or DICOM directory.")
    @force_option
    def filter_cmd(image, fwhm, calibration, site, out, force):
        """Apply the Gaussian post-filter to an image: NIfTI/NRRD in -> same format out,
        DICOM series directory in -> DICOM series directory out (tags copied, new UIDs).

        \b
        Example:
          sitekit earl filter patient.nii.gz --fwhm 6.0 --out patient_filtered.nii.gz
          sitekit earl filter patient_dicom/ --calibration calib/ --site site_A --out filtered_dicom/
        """
        from sitekit.exceptions import UnknownSiteError, ValidationError
        from sitekit.harmonize import earl
        from sitekit.harmonize.earl import write_dicom_series
        from sitekit.io import read_image, write_image

        if (fwhm is None) == (calibration is None):
            raise ValidationError("Give either --fwhm MM or --calibration CAL with --site SITE.")
        if calibration is not None:
            if not site:
                raise ValidationError("--calibration needs --site to choose the site's filter.")
            table = earl.read_calibration(calibration)
            if site not in table:
                raise UnknownSiteError(f"Site '{site}' is not in '{calibration}'; sites: {', '.join(table)}.")
            fwhm = table[site]
        src = Path(image)
        if src.is_dir():
            img = earl.read_phantom(src)
            outp = earl.apply_filter(img, fwhm)
            write_dicom_series(outp, out, reference=src, force=force, inputs=(src,),
                               series_description=f"Gaussian {fwhm:g} mm (sitekit)")
        else:
            img = read_image(src)
            outp = earl.apply_filter(img, fwhm)
            if Path(out).exists() and Path(out).resolve() == src.resolve():
                raise ValidationError(f"Output '{out}' is the input; choose another output path.")
            write_image(outp, out, force=force)
        click.echo(f"Filtered with a {fwhm:g} mm FWHM Gaussian -> {out}")

    @group.command("calibration-qc")
    @click.argument("cylinder", type=click.Path(exists=True))
    @click.option("--expected-conc", type=float, help="True concentration at scan start (image units).")
    @click.option("--fill", type=click.Path(exists=True, dir_okay=False),
                  help="Cylinder fill JSON: {scan_start, cylinder: {activity_mbq, volume_ml, measured_at}}.")
    @click.option("--tolerance", type=float, default=0.10, show_default=True, help="Allowed relative deviation.")
    @click.option("--out", type=click.Path(file_okay=False), help="Directory for qc.csv.")
    @force_option
    def qc_cmd(cylinder, expected_conc, fill, tolerance, out, force):
        """Check a uniform cylinder scan against its expected concentration (+-10 %). Exit 1 on fail.

        \b
        Example:
          sitekit earl calibration-qc cylinder.nii.gz --expected-conc 5000 --out qc/
        """
        from sitekit.exceptions import CheckFailedError
        from sitekit.harmonize import earl
        from sitekit.io import write_table

        with show_warnings():
            img = earl.read_phantom(cylinder)
            qc = earl.calibration_qc(img, expected_conc=expected_conc, fill=fill, tolerance=tolerance)
            if out:
                write_table(qc, Path(out) / "qc.csv", force=force)
        print_table(qc, title="Calibration QC")
        r = qc.iloc[0]
        if not r["passed"]:
            raise CheckFailedError(f"measured/expected = {r['ratio']:.3f}, outside +-{100 * tolerance:g} %", result=qc)

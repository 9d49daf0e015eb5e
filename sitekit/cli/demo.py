"""`sitekit demo`: the whole chain on the shipped sample data, ending in one report.

Every step runs the same sitekit command a user would type and writes that command's
outputs into ``OUT/<step>/``; the console shows one line per step (each step's own output
goes to ``OUT/<step>/log.txt``).  The report is then built from ``OUT`` by
``sitekit report``.  A step that fails stops the demo with a non-zero exit naming the step
and its log; only the steps the user leaves out (``--steps``) are skipped.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
import warnings
from pathlib import Path

import click

from sitekit.exceptions import SitekitError

#: The demo's steps, in order: (folder, one-line description).
STEPS = (
    ("earl/check", "EARL1 check of the four phantom scans (unfiltered)"),
    ("earl/calibrate", "EARL1 calibration: each site's harmonising post-filter"),
    ("filtered", "post-filter the phantoms with each site's filter"),
    ("earl/check_filtered", "EARL1 check of the filtered phantoms"),
    ("extract", "pyradiomics features of the cohort, images post-filtered per site"),
    ("stability", "feature stability under image perturbations"),
    ("harmonize", "ComBat on the multi-site feature table"),
    ("suite_combat", "robustness suite: leave-one-site-out model with ComBat in each fold"),
    ("suite_raw", "robustness suite: the same model without harmonisation"),
    ("segmentation", "image models across sites: the demo U-Net (ONNX) and the 41 % baseline, "
                     "blur sweep, query-only attack"),
    ("monitor", "post-deployment monitoring of a study stream: a calibration drift at one site, "
                "a scanner replacement at another"),
    ("report", "the HTML report of everything above"),
)

#: Small perturbation runs for the demo (full studies use --n 20 and the NTCV chain).
PERTURBATIONS = {
    "count_noise": '[[perturbation]]\nname = "RandomCountNoise"\nscan_time = [0.5, 1.0]\n',
    "resolution": '[[perturbation]]\nname = "RandomGaussianBlur"\nfwhm_mm = [3.0, 7.0]\n',
    "segmentation": '[[perturbation]]\nname = "RandomMaskVolume"\nfraction = [-0.15, 0.15]\n',
}

SUITE = """\
# Written by `sitekit demo`: the sample suite with demo-sized settings.
[data]
table = "{table}"
features = {features}
label = "outcome"
site = "site"
id = "subject_id"
covariates = ["age", "sex"]
{stability}
[model]
spec = "logistic"
params = {{ C = 0.1 }}
{harmonize}
[settings]
random_state = 0
test_size = 0.3
n_bootstrap = {n_bootstrap}
n_permutations = {n_permutations}
n_repeats = 3

[stress]
{noise}calibration_factors = [0.9, 0.95, 1.05, 1.1]
site_shift = true

[adversarial]
norm = "l2"
scale = "std"
budgets = [0.1, 0.25, 0.5]

[checks]
worst_site_auc = {{ min = 0.70 }}
{site_check}auc_drop_noise = {{ level = {noise_check}, max = 0.05 }}
auc_drop_calibration = {{ factor = 1.1, max = 0.05 }}
auc_drop_site_shift = {{ max = 0.05 }}
median_adversarial_distance = {{ min = 0.25 }}
"""


class StepFailed(Exception):
    """A demo step that failed: ``step``, its command's exit ``code`` and its ``log``."""

    def __init__(self, message: str, *, code: int = 3, log: Path | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.log = log
        self.step: str | None = None


def _run(args: list[str], log: Path) -> int:
    """Run one sitekit command, its console output going to ``log``; return its exit code."""
    from sitekit.cli import _state, main

    log.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    debug = ["--debug"] if _state.get("debug") else []  # keep `sitekit --debug demo` in the steps
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main([*debug, *args])
    log.write_text("$ sitekit " + " ".join(args) + "\n" + buf.getvalue(), encoding="utf-8")
    return code


def _has_command(*path: str) -> bool:
    from sitekit.cli import cli

    cmd = cli
    for p in path:
        cmd = getattr(cmd, "commands", {}).get(p)
        if cmd is None:
            return False
    return True


def _stability_manifest(root: Path, out: Path, per_site: int) -> Path:
    """A manifest of ``per_site`` cases per site with absolute paths (fast stability runs)."""
    import pandas as pd

    m = pd.read_csv(root / "cohort" / "manifest.csv")
    m = m.groupby("site", sort=True).head(per_site).reset_index(drop=True)
    for col in ("image", "mask"):
        m[col] = [str((root / "cohort" / p).resolve()) for p in m[col]]
    out.parent.mkdir(parents=True, exist_ok=True)
    m.to_csv(out, index=False)
    return out


def _min_icc_table(stab_root: Path, out: Path) -> Path | None:
    """Per feature, the lowest ICC over the stability runs (the suite's within-subject noise)."""
    import pandas as pd

    tables = [pd.read_csv(p, usecols=["feature", "icc"])
              for p in sorted(stab_root.glob("*/stability.csv"))]
    if not tables:
        return None
    t = pd.concat(tables).groupby("feature", as_index=False)["icc"].min()
    out.parent.mkdir(parents=True, exist_ok=True)
    t.to_csv(out, index=False)
    return out


def _robust_features(stab_root: Path, table: Path, minimum: int = 8) -> list[str] | None:
    """Features of ``table`` robust in every stability run (None when too few are)."""
    import pandas as pd

    lists = [set(p.read_text().split()) for p in sorted(stab_root.glob("*/robust_features.txt"))]
    if not lists:
        return None
    robust = set.intersection(*lists)
    cols = [c for c in pd.read_csv(table, nrows=0).columns if c in robust]
    return cols if len(cols) >= minimum else None


def run_demo(out: Path, *, root: Path, quick: bool = False, steps=None, echo=click.echo) -> dict:
    """Run the steps (all, or the names in ``steps``) into ``out``.

    Returns ``{step: status}``: ``ok`` or ``check failed (expected)`` (an EARL check of
    unfiltered phantoms, a suite whose checks fail).  A step that fails raises
    :class:`StepFailed` (its status ``failed: <why>``) and the later steps do not run.
    """
    py_root = root.resolve()
    phantoms = [py_root / "phantoms" / f"{s}.nii.gz" for s in ("site_A", "site_B", "site_C", "site_D")]
    fills = [p.with_name(p.name.replace(".nii.gz", "_fill.json")) for p in phantoms]
    fill_args = [a for f in fills for a in ("--fill", str(f))]
    table = py_root / "features.csv"
    status: dict[str, str] = {}

    def step(name: str, fn) -> None:
        desc = dict(STEPS)[name]
        t0 = time.perf_counter()
        try:
            result = fn()
        except StepFailed as exc:
            status[name] = f"failed: {exc}"
            exc.step = name
            echo(f"  !! {name:<20s} FAILED ({exc})")
            raise
        dt = time.perf_counter() - t0
        status[name] = result
        echo(f"  {'ok' if result == 'ok' else '!!'} {name:<20s} {dt:6.1f} s  {desc}"
             + ("" if result == "ok" else f"  [{result}]"))

    def cmd(args: list[str], folder: str, *, fail_ok: bool = False) -> str:
        code = _run(args, out / folder / "log.txt")
        if code == 1 and fail_ok:
            return "check failed (expected)"
        if code != 0:
            log = out / folder / "log.txt"
            raise StepFailed(f"`sitekit {' '.join(args[:2])}` exited with {code}; see {log}",
                             code=code, log=log)
        return "ok"

    def need(*path):
        if not _has_command(*path):
            raise StepFailed(f"`sitekit {' '.join(path)}` is not available in this build")

    def require(path: Path, step_name: str) -> None:
        if not path.exists():
            raise StepFailed(f"needs '{path}' from the '{step_name}' step; run that step first "
                             f"(--steps {step_name},...)", code=2)

    # 1. EARL check and calibration per site
    def earl_check():
        need("earl", "check")
        return cmd(["earl", "check", *map(str, phantoms), *fill_args, "--standard", "earl1",
                    "--out", str(out / "earl" / "check"), "--force"], "earl/check", fail_ok=True)

    def earl_calibrate():
        need("earl", "calibrate")
        return cmd(["earl", "calibrate", *map(str, phantoms), *fill_args, "--standard", "earl1",
                    "--max-fwhm", "10" if quick else "12", "--step", "1.0" if quick else "0.5",
                    "--out", str(out / "earl" / "calibrate"), "--force"], "earl/calibrate")

    calibration = out / "earl" / "calibrate" / "calibration.json"

    def filtered():
        need("earl", "filter")
        require(calibration, "earl/calibrate")
        for p in phantoms:
            site = p.name.replace(".nii.gz", "")
            cmd(["earl", "filter", str(p), "--calibration", str(calibration), "--site", site,
                 "--out", str(out / "filtered" / "phantoms" / p.name), "--force"], "filtered")
        return "ok"

    def earl_check_filtered():
        need("earl", "check")
        files = sorted((out / "filtered" / "phantoms").glob("*.nii.gz"))
        if len(files) != len(phantoms):
            require(out / "filtered" / "phantoms" / phantoms[0].name, "filtered")
        return cmd(["earl", "check", *map(str, files), *fill_args, "--standard", "earl1",
                    "--out", str(out / "earl" / "check_filtered"), "--force"],
                   "earl/check_filtered", fail_ok=True)

    # 2. extraction from the cohort, post-filtered per site
    def extract():
        need("extract")
        args = ["extract", str(py_root / "cohort" / "manifest.csv"),
                "--out", str(out / "extract" / "features.parquet"), "--force"]
        if calibration.exists():
            args += ["--earl-calibration", str(calibration)]
        return cmd(args, "extract")

    # 3. feature stability under perturbations
    def stability():
        need("robustness", "features")
        manifest = _stability_manifest(py_root, out / "stability" / "manifest.csv",
                                       per_site=1 if quick else 2)
        for name, text in PERTURBATIONS.items():
            toml = out / "stability" / f"{name}.toml"
            toml.write_text(text, encoding="utf-8")
            cmd(["robustness", "features", str(manifest), "--perturbations", str(toml),
                 "--n", "3", "--random-state", "0", "--out", str(out / "stability" / name), "--force"],
                f"stability/{name}")
        return "ok"

    # 4. ComBat on the robust features of the multi-site table
    selected = {"features": None}

    def harmonize():
        need("harmonize", "run")
        feats = _robust_features(out / "stability", table)
        selected["features"] = feats
        args = ["harmonize", "run", str(table), "--site-col", "site", "--covariates", "age,sex",
                "--out", str(out / "harmonize" / "harmonized.csv"), "--model",
                str(out / "harmonize" / "model.npz"), "--diagnostics",
                str(out / "harmonize" / "diagnostics.json"), "--force"]
        if feats:
            args += ["--features", ",".join(feats)]
        return cmd(args, "harmonize")

    # 5. robustness suites: LOSO with and without harmonisation, stress, adversarial
    def suite(name: str, combat: bool):
        def run():
            need("robustness", "run")
            feats = selected["features"] or _robust_features(out / "stability", table)
            icc = _min_icc_table(out / "stability", out / "suites" / "stability_min_icc.csv")
            if icc is not None:  # noise in within-subject SDs measured by the stability step
                stab = f'stability = "{str(icc).replace(chr(92), "/")}"\n'
                noise = 'noise_unit = "within"\nnoise_levels = [0.5, 1.0, 2.0, 4.0]\n'
                noise_check = "1.0"
            else:
                stab, noise = "", "noise_levels = [0.1, 0.25, 0.5, 1.0]\n"
                noise_check = "0.25"
            text = SUITE.format(
                stability=stab, noise=noise, noise_check=noise_check,
                table=str(table).replace("\\", "/"),
                features='"^original_"' if not feats else "[" + ", ".join(f'"{f}"' for f in feats) + "]",
                harmonize='harmonize = "combat"\n' if combat else "",
                n_bootstrap=100 if quick else 200, n_permutations=5 if quick else 20,
                site_check="site_predictability = { max = 0.625 }\n" if combat else "",
            )
            toml = out / "suites" / f"{name}.toml"
            toml.parent.mkdir(parents=True, exist_ok=True)
            toml.write_text(text, encoding="utf-8")
            return cmd(["robustness", "run", str(toml), "--out", str(out / name), "--force"], name,
                       fail_ok=True)
        return run

    def library(folder: str, fn) -> str:
        """A step that calls the library directly; its messages and any error go to a log."""
        log = out / f"{folder}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn(lines.append)
            lines += [f"warning: {w.message}" for w in caught]
        except Exception as exc:
            known = isinstance(exc, SitekitError)
            lines.append(f"error: {exc}" if known else f"error: {type(exc).__name__}: {exc}")
            what = str(exc) if known else f"unexpected {type(exc).__name__}: {exc}"
            raise StepFailed(f"{folder}: {what}; see {log}", code=2 if known else 3,
                             log=log) from exc
        finally:
            log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return "ok"

    # 6. image segmentation models across sites
    def segmentation():
        from sitekit.robustness.segmentation import demo_step

        return library("segmentation", lambda say: demo_step(
            out, random_state=0, manifest=py_root / "cohort" / "manifest.csv",
            model_path=py_root / "models" / "unet_pet.onnx", progress=say,
            **({"blur_fwhm_mm": (0.0, 8.0), "budgets_sd": (2.0,)} if quick else {})))

    # 7. surveillance after deployment
    def monitor():
        from sitekit.cli.monitor import demo_step as monitor_demo

        return library("monitor", lambda say: monitor_demo(out, random_state=0))

    def report():
        need("report")
        code = _run(["report", str(out), "--out", str(out / "report.html"), "--force",
                     "--title", "sitekit demo report"], out / "report.log")
        if code != 0:
            raise StepFailed(f"`sitekit report` exited with {code}; see {out / 'report.log'}",
                             code=code, log=out / "report.log")
        return "ok"

    for name, fn in (("earl/check", earl_check), ("earl/calibrate", earl_calibrate),
                     ("filtered", filtered), ("earl/check_filtered", earl_check_filtered),
                     ("extract", extract), ("stability", stability), ("harmonize", harmonize),
                     ("suite_combat", suite("suite_combat", True)),
                     ("suite_raw", suite("suite_raw", False)), ("segmentation", segmentation),
                     ("monitor", monitor), ("report", report)):
        if steps is None or name in steps:
            step(name, fn)
    return status


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option("--out", "out", type=click.Path(file_okay=False), default="demo_output", show_default=True,
                  help="Folder for the demo's outputs (one sub-folder per step, report.html).")
    @click.option("--quick", is_flag=True,
                  help="Fewer perturbed cases, a coarser filter sweep and fewer bootstraps (tests).")
    @click.option("--steps", "steps", default=None, metavar="A,B,...",
                  help="Run only these steps (e.g. 'report' to rebuild the report from OUT); "
                       f"names: {', '.join(n for n, _ in STEPS)}.")
    def demo(out: str, quick: bool, steps: str | None) -> None:
        """Run the whole chain on the shipped sample data and build the report.

        \b
        Steps (each writes the outputs of the named command into OUT/<step>/):
          earl check -> earl calibrate -> earl filter -> earl check (filtered)
          -> extract (post-filtered per site) -> robustness features (3 perturbations)
          -> harmonize run (ComBat) -> robustness run (with and without ComBat)
          -> segmentation (the demo U-Net and the 41 % baseline per site, blur, attack)
          -> monitor (control charts on a study stream) -> report (OUT/report.html)
        Uses sample_data/ of the source tree; when it is missing (an installed package), the
        sample data are generated into OUT/sample_data first.  A step that fails stops the
        demo with its exit code, naming the step and its log.

        \b
        Example:
          sitekit demo --out demo_output --quick
        """
        from sitekit._validation import check_option
        from sitekit.cli._common import print_table
        from sitekit.datasets import generate_sample_data, sample_data_dir, summarize_sample_data

        names = [n for n, _ in STEPS]
        chosen = None
        if steps:
            chosen = [check_option(x.strip(), names, name="--steps", owner="sitekit demo")
                      for x in steps.split(",") if x.strip()]
        outdir = Path(out).resolve()  # paths written into suite files must not depend on the cwd
        root = sample_data_dir()
        if not (root / "cohort" / "manifest.csv").exists():
            root = outdir / "sample_data"
            if not (root / "cohort" / "manifest.csv").exists():
                click.echo(f"Generating sample data into {root} ...")
                generate_sample_data(root, force=True)
        print_table(summarize_sample_data(root), title=f"Sample data per site ({root})")
        for name in chosen or names:  # a rerun starts clean, so the report shows this run only
            if name != "report":
                shutil.rmtree(outdir / name, ignore_errors=True)
        t0 = time.perf_counter()
        click.echo(f"Running the chain into {outdir}/ (each step's log: <step>/log.txt)")
        status: dict[str, str] = {}
        try:
            status = run_demo(outdir, root=root, quick=quick, steps=chosen)
        except StepFailed as exc:
            click.secho(f"Error: the demo failed at step '{exc.step}': {exc}", fg="red", err=True)
            raise click.exceptions.Exit(exc.code if exc.code in (1, 2, 3) else 3) from None
        total = time.perf_counter() - t0
        left_out = [n for n in names if chosen is not None and n not in chosen]
        click.echo(f"Done in {total:.0f} s" + (
            f"; left out (--steps): {', '.join(left_out)}" if left_out else "."))
        if status.get("report") == "ok":
            click.echo(f"Report: {(outdir / 'report.html').resolve()}")

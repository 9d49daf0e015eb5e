"""Out-of-core ComBat on a LocalCluster: a Parquet dataset larger than the cluster's memory.

Generates (seeded, in a temporary directory) a multi-site Parquet dataset of
N samples x F float64 features plus a site column and an age covariate, then on a
``LocalCluster`` whose workers are each limited to ``--memory-limit``:

1. fits ComBat with the dask engine (map-reduce of sufficient statistics),
2. harmonises the whole dataset lazily and writes it back to Parquet,

recording wall time and the peak resident memory of all processes (this one, the
scheduler, nannies and workers; sampled with psutil).  Beside them, on the same cluster and
files, the I/O floor: one plain pyarrow read of every file (``pq.read_table``, the fit's
budget is 3x that) and a read + write of every file (the transform's budget).  The machine
load (``os.getloadavg``) is printed with the figures; each timing is the best of
``--repeat`` runs.  In the same run, the first 10 %
of the rows is harmonised by the dask engine and by in-memory ``ComBat`` and the two are
compared (they must agree to 1e-10 feature SDs).

    .venv/bin/python benchmarks/scale.py            # 250,000 x 2,000 (~4 GB), 2 workers x 2 GB
    .venv/bin/python benchmarks/scale.py --quick    # 20,000 x 200 smoke run
"""

from __future__ import annotations

import argparse
import logging
import os

# arrow's own allocator keeps freed memory; the system one returns it (workers inherit this)
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

SITES = np.array(["s01", "s02", "s03", "s04", "s05", "s06", "s07", "s08"])


def generate(path: Path, n: int, f: int, rows_per_file: int, seed: int = 0) -> float:
    """Write the dataset as one Parquet file per ``rows_per_file`` rows; return GB of features."""
    path.mkdir(parents=True)
    rng0 = np.random.default_rng(seed)
    loc = rng0.normal(0, 1, (SITES.size, f))
    scale = rng0.uniform(0.6, 1.6, (SITES.size, f))
    slope = rng0.uniform(0.0, 0.05, f)
    names = [f"f{j:05d}" for j in range(f)]
    for k, start in enumerate(range(0, n, rows_per_file)):
        m = min(rows_per_file, n - start)
        rng = np.random.default_rng([seed, k])
        codes = rng.integers(0, SITES.size, m)
        age = rng.uniform(20, 80, m)
        X = rng.standard_normal((m, f))
        X *= scale[codes]
        X += loc[codes]
        X += 10.0 + age[:, None] * slope
        cols = {"site": pa.array(SITES[codes]), "age": pa.array(age)}
        cols.update({nm: pa.array(X[:, j]) for j, nm in enumerate(names)})
        pq.write_table(pa.table(cols), path / f"part-{k:05d}.parquet", row_group_size=m)
    return n * f * 8 / 1e9


def _read_file(path) -> int:
    """One plain pyarrow read of a file (the fit's I/O floor)."""
    return pq.read_table(path).nbytes


def _read_write_file(path, out_dir) -> int:
    """Read a file and write it back (the transform's I/O floor)."""
    table = pq.read_table(path)
    pq.write_table(table, Path(out_dir) / Path(path).name)
    return table.nbytes


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} cores"


class PeakMemory:
    """Sample the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak = 0
        self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        total, single = 0, 0
        for p in [me, *me.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            single = max(single, rss)
        self.peak = max(self.peak, total)
        self.peak_single = max(self.peak_single, single)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def reset(self) -> None:
        self._sample()
        self.peak = self.peak_single = 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 x 200 smoke run")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--features", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GB", help="per worker")
    ap.add_argument("--rows-per-file", type=int, default=None)
    ap.add_argument("--tmp", default=None, help="directory for the generated data")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (best is kept)")
    args = ap.parse_args(argv)
    n = args.samples or (20_000 if args.quick else 250_000)
    f = args.features or (200 if args.quick else 2_000)
    rows = args.rows_per_file or (2_000 if args.quick else 5_000)

    import dask
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from sitekit.harmonize import _dask
    from sitekit.harmonize._combat import ComBat

    root = Path(tempfile.mkdtemp(prefix="sitekit_scale_", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        gb = generate(root / "data", n, f, rows)
        t_gen = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in (root / "data").iterdir()) / 1e9
        print(f"data: {n:,} samples x {f:,} features float64 = {gb:.2f} GB in memory "
              f"({disk:.2f} GB Parquet, {len(list((root / 'data').iterdir()))} files), "
              f"generated in {t_gen:.1f} s")
        feats = [f"f{j:05d}" for j in range(f)]
        with PeakMemory() as mem, LocalCluster(
            n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit,
            dashboard_address=":0", processes=True, silence_logs=logging.ERROR,
        ) as cluster, Client(cluster) as client:
            limit = args.workers * dask.utils.parse_bytes(args.memory_limit) / 1e9
            print(f"cluster: {args.workers} workers x {args.memory_limit} "
                  f"(total {limit:.1f} GB; data/cluster memory = {gb / limit:.2f})")
            files = sorted((root / "data").iterdir())
            limit_bytes = dask.utils.parse_bytes(args.memory_limit)

            def best(fn):
                times, peaks = [], []
                for _ in range(args.repeat):
                    mem.reset()
                    t0 = time.perf_counter()
                    result = fn()
                    times.append(time.perf_counter() - t0)
                    peaks.append((mem.peak, mem.peak_single))
                i = int(np.argmin(times))
                return times[i], peaks[i], result

            # the I/O floor on the same cluster: every file read once / read and written once
            t_read, peak_read, _ = best(lambda: client.gather(client.map(_read_file, files, pure=False)))
            floor_out = root / "floor"

            def read_write():
                shutil.rmtree(floor_out, ignore_errors=True)
                floor_out.mkdir()
                return client.gather(client.map(_read_write_file, files, out_dir=str(floor_out),
                                                 pure=False))

            t_rw, peak_rw, _ = best(read_write)
            shutil.rmtree(floor_out, ignore_errors=True)
            os.sync()  # written pages flushed now, not during the next measurement
            ddf = dd.read_parquet(root / "data")

            def do_fit():
                return _dask.fit(ComBat(), ddf[feats], sites=ddf["site"], covariates=ddf[["age"]])

            t_fit, (fit_peak, fit_single), model = best(do_fit)

            def do_transform():
                shutil.rmtree(root / "out", ignore_errors=True)
                out = _dask.transform_frame(model, ddf, site_col="site", covariate_cols=["age"],
                                            features=feats)
                _dask.write_table(out, root / "out")

            t_tr, (total_peak, single_peak), _ = best(do_transform)
            os.sync()

            # the same run: dask engine vs in-memory ComBat on the first 10 % of the rows
            k = max(1, len(files) // 10)
            part = dd.read_parquet(files[:k])
            m_d = _dask.fit(ComBat(), part[feats], sites=part["site"], covariates=part[["age"]])
            lazy = _dask.transform(m_d, part[feats], sites=part["site"], covariates=part[["age"]])
            # partitions gathered one by one and joined here: a single compute() would join
            # them on one worker (0.4 GB twice over, next to its own work, on a 2 GB worker)
            got = pd.concat(dask.compute(*lazy.to_delayed()))
            local = pd.read_parquet(files[:k])
            t0 = time.perf_counter()
            ref = ComBat().fit_transform(local[feats], sites=local["site"].to_numpy(), covariates=local[["age"]])
            t_mem = time.perf_counter() - t0
            sd = ref.to_numpy().std(axis=0)
            diff = np.max(np.abs(got.to_numpy() - ref.to_numpy()) / sd)
            # and the full run's output rows of that slice equal a transform by the full model
            out_files = sorted((root / "out").glob("*.parquet"))[:k]  # partition i <- file i
            full_rows = pd.read_parquet(out_files, columns=feats)
            direct = model.transform(local[feats], sites=local["site"].to_numpy(), covariates=local[["age"]])
            diff_full = np.max(np.abs(full_rows.to_numpy() - direct.to_numpy()) / sd)
            client.close()
        print()
        print(f"best of {args.repeat}; {load()}")
        print(f"{'step':<46}{'wall s':>9}{'x floor':>9}{'peak RSS GB':>13}{'max worker GB':>15}")
        rows = [
            ("pyarrow read of every file (fit floor)", t_read, None, peak_read),
            ("pyarrow read + write (transform floor)", t_rw, None, peak_rw),
            ("dask fit (one pass over the data)", t_fit, t_fit / t_read, (fit_peak, fit_single)),
            ("dask transform + write Parquet", t_tr, t_tr / t_rw, (total_peak, single_peak)),
        ]
        for name, t, ratio, (peak, single) in rows:
            r = f"{ratio:>9.2f}" if ratio is not None else f"{'':>9}"
            print(f"{name:<46}{t:>9.1f}{r}{peak / 1e9:>13.2f}{single / 1e9:>15.2f}")
        print(f"{f'in-memory ComBat, 10 % slice ({len(local):,} rows)':<46}{t_mem:>9.1f}")
        print()
        print(f"worker memory limit {limit_bytes / 1e9:.2f} GB; largest single process "
              f"{max(fit_single, single_peak) / 1e9:.2f} GB "
              f"({'within' if max(fit_single, single_peak) <= limit_bytes else 'OVER'} the limit)")
        print(f"fit <= 3x read: {'yes' if t_fit <= 3 * t_read else 'NO'} ({t_fit / t_read:.2f}x); "
              f"transform <= 3x read+write: {'yes' if t_tr <= 3 * t_rw else 'NO'} ({t_tr / t_rw:.2f}x)")
        print(f"10 % slice: dask engine vs in-memory ComBat max |diff| = {diff:.2e} feature SDs")
        print(f"10 % slice of the full run's output vs in-memory transform: {diff_full:.2e} feature SDs")
        print(f"({load()})")
        ok = diff <= 1e-10 and diff_full <= 1e-10
        print("agreement:", "OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    sys.exit(main())

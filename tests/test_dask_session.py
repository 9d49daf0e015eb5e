"""The one Dask-session helper (sitekit._dask_session) used by ComBat's Dask engine and extract."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from sitekit._dask_session import dask_client, worker_memory
from sitekit.exceptions import ValidationError
from sitekit.harmonize import _dask


def test_scheduler_and_workers_together_are_refused():
    with pytest.raises(ValidationError, match="not both"), dask_client(scheduler="tcp://x:1", workers=2):
        pass


def test_unreachable_scheduler_names_the_address_and_the_fix():
    with pytest.raises(ValidationError, match=r"tcp://127\.0\.0\.1:9.*--workers"), dask_client(
        scheduler="tcp://127.0.0.1:9", timeout="1s"
    ):
        pass


def test_local_cluster_memory_sizes_parquet_partitions(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "t.parquet"
    frame = pd.DataFrame(rng.normal(size=(4000, 50)), columns=[f"f{j}" for j in range(50)])
    frame.to_parquet(path, row_group_size=500)
    with dask_client(workers=1, memory_limit="200MB") as client:
        assert worker_memory(client) == 200_000_000
        with _dask.session(workers=1, memory_limit="400MB") as inner:
            assert worker_memory(inner) == 400_000_000
            ddf = _dask.read_table(path)
            assert isinstance(ddf, dd.DataFrame)
            # 400 MB / 8 -> 50 MB partitions; the 1.6 MB file is one partition
            assert ddf.npartitions == 1
            small = _dask.read_table(path, blocksize=200_000)  # caller's choice wins
            assert small.npartitions > 1
            pd.testing.assert_frame_equal(small.compute().reset_index(drop=True), frame)

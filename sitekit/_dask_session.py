"""One way to get a Dask client: connect to a scheduler or start a local cluster.

Used by the Dask engine of ComBat (:func:`sitekit.harmonize._dask.session`) and by feature
extraction (:func:`sitekit.features.extract` with ``workers``/``scheduler``).  ``distributed``
is imported only when a client is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from sitekit.exceptions import ValidationError

__all__ = ["dask_client", "worker_memory"]

#: default local cluster size when neither workers nor a scheduler is given
DEFAULT_WORKERS = 2


@contextlib.contextmanager
def dask_client(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | float = "auto",
    timeout: str = "10s",
) -> Iterator:
    """Yield a ``distributed.Client``; close it (and any cluster it started) at the end.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    workers : int, optional
        Without ``scheduler``: start a ``LocalCluster`` of this many single-threaded worker
        processes (default 2).
    memory_limit : str or float, default="auto"
        Memory limit per worker of the local cluster (``"2GB"``, bytes, or ``"auto"``).
    timeout : str, default="10s"
        How long to try to reach ``scheduler``.

    Yields
    ------
    distributed.Client

    Raises
    ------
    ValidationError
        Both ``scheduler`` and ``workers`` given, or the scheduler cannot be reached (the
        message names the address and the fix).
    """
    from distributed import Client, LocalCluster

    if scheduler and workers:
        raise ValidationError(
            "Give either a scheduler address (--scheduler) or a number of local workers "
            "(--workers), not both."
        )
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValidationError(
                f"Cannot connect to the Dask scheduler at '{scheduler}' ({exc}). Check the "
                "address (e.g. tcp://host:8786) and that the scheduler is running, or use "
                "--workers N to start a local cluster."
            ) from exc
    else:
        with warnings.catch_warnings():
            # the dashboard moves to a free port when 8787 is taken: harmless
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
            cluster = LocalCluster(
                n_workers=int(workers or DEFAULT_WORKERS), threads_per_worker=1, processes=True,
                dashboard_address=None, memory_limit=memory_limit, silence_logs=logging.ERROR,
            )
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_memory(client) -> int | None:
    """Smallest memory limit (bytes) among the client's workers; None when unlimited/unknown."""
    workers = client.scheduler_info().get("workers", {})
    limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
    limits = [m for m in limits if m > 0]
    return min(limits) if limits else None

"""Post-deployment surveillance per site: control charts with calibrated false-alarm rates.

:class:`SiteMonitor` is fitted on a reference period and then fed new studies
(:meth:`SiteMonitor.update`); it charts features, reference-region uptake, model outputs,
performance and phantom QC per site, checks a fitted ComBat model for stale site effects,
and returns the alarms with what each suggests.  The thresholds come from a target
in-control average run length (:func:`cusum_threshold`, :func:`ewma_threshold`), shared by
all charts of the network (:func:`split_arl0`).
"""

from sitekit.monitor._calibration import (
    cusum_arl,
    cusum_threshold,
    ewma_arl,
    ewma_threshold,
    siegmund_arl,
    split_arl0,
)
from sitekit.monitor._charts import cusum, ewma, westgard
from sitekit.monitor._monitor import ALARM_COLUMNS, HISTORY_COLUMNS, SUMMARY_COLUMNS, SiteMonitor
from sitekit.monitor._signals import (
    SUGGESTIONS,
    Signal,
    batch_effect_test,
    phantom_history,
    robust_reference,
)

__all__ = [
    "SiteMonitor",
    "Signal",
    "ALARM_COLUMNS",
    "HISTORY_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUGGESTIONS",
    "batch_effect_test",
    "phantom_history",
    "robust_reference",
    "cusum",
    "ewma",
    "westgard",
    "cusum_arl",
    "ewma_arl",
    "siegmund_arl",
    "cusum_threshold",
    "ewma_threshold",
    "split_arl0",
]

"""SiteMonitor: per-site control charts with calibrated false-alarm rates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._validation import check_bool, check_number, check_option
from sitekit.exceptions import UnknownSiteError, ValidationError
from sitekit.harmonize._design import covariate_column_names
from sitekit.io import atomic_directory
from sitekit.monitor import _charts, _state
from sitekit.monitor._calibration import cusum_threshold, ewma_threshold, split_arl0
from sitekit.monitor._signals import (
    SUGGESTIONS,
    Signal,
    _covariates,
    _feature_block,
    _window_test,
    harmonizer_arrays,
    robust_reference,
)

__all__ = ["SiteMonitor", "ALARM_COLUMNS", "HISTORY_COLUMNS", "SUMMARY_COLUMNS"]

#: Columns of the alarms table returned by :meth:`SiteMonitor.update`.
ALARM_COLUMNS = ["site", "signal", "time", "statistic", "threshold", "suggestion", "kind",
                 "direction", "study", "rule"]
#: Columns of :attr:`SiteMonitor.history_` (one row per site, signal and observed study).
HISTORY_COLUMNS = ["site", "signal", "kind", "study", "time", "value", "z", "statistic",
                   "threshold", "alarm"]
#: Columns of :meth:`SiteMonitor.summary`.
SUMMARY_COLUMNS = ["site", "n_reference", "n_studies", "n_alarms", "signals_alarmed",
                   "last_alarm", "status", "suggestion"]
HARMONIZATION = "harmonization"
_CHARTS = ("cusum", "ewma", "westgard")
_STATE_FILE = "state.npz"
_ALARM_DTYPES = {"site": object, "signal": object, "time": float, "statistic": float,
                 "threshold": float, "suggestion": object, "kind": object, "direction": object,
                 "study": np.int64, "rule": object}


def _as_frame(X, owner: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise ValidationError(f"{owner} needs a pandas DataFrame with the signal columns. "
                              f"Got {type(X).__name__} instead.")
    return X.reset_index(drop=True)


def _labels(values, n: int, name: str, owner: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object).ravel()
    if arr.size != n:
        raise ValidationError(f"{owner}: '{name}' has {arr.size} entries for {n} rows.")
    if pd.isna(pd.Series(arr)).any():
        raise ValidationError(f"{owner}: '{name}' has missing values; every study needs one.")
    return np.asarray([str(v) for v in arr], dtype=object)


def _times(times, n: int, kind: str | None, owner: str) -> tuple[np.ndarray, str]:
    s = pd.Series(np.asarray(times, dtype=object).ravel() if not isinstance(times, pd.Series)
                  else times.to_numpy())
    if s.size != n:
        raise ValidationError(f"{owner}: 'times' has {s.size} entries for {n} rows.")
    if pd.api.types.is_numeric_dtype(s.infer_objects()) and not pd.api.types.is_bool_dtype(s):
        t = s.astype(float).to_numpy()
        new_kind = "number"
    else:
        try:
            dt = pd.to_datetime(s, utc=False)
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"{owner}: 'times' must be numbers or dates ({exc}).") from None
        if getattr(dt.dt, "tz", None) is not None:
            dt = dt.dt.tz_convert("UTC").dt.tz_localize(None)
        t = dt.astype("int64").to_numpy().astype(float)
        t[dt.isna().to_numpy()] = np.nan
        new_kind = "datetime"
    if not np.all(np.isfinite(t)):
        raise ValidationError(f"{owner}: 'times' has missing or non-finite values.")
    if kind is not None and kind != new_kind:
        words = {"number": "numbers", "datetime": "dates"}
        raise ValidationError(f"{owner}: 'times' are {words[new_kind]} but the monitor has seen "
                              f"{words[kind]}; use one kind of time throughout.")
    return t, new_kind


class SiteMonitor(BaseEstimator):
    """Watch every site for drift, with alarm thresholds set by a target false-alarm rate.

    Fitted on a reference period (training or accreditation data), the monitor keeps per
    site and signal the in-control median and spread (normalised MAD) and runs one control
    chart per site and signal on the standardised values ``z = (x - median) / MAD``.  Its
    thresholds are chosen for the in-control average run length ``arl0`` (Markov-chain
    calibration, :func:`cusum_threshold` / :func:`ewma_threshold`).  Optionally, a fitted
    ComBat model is watched too: every ``window`` new studies of a site, the site's batch
    effect is re-estimated and tested against the model (:func:`batch_effect_test`).

    Parameters
    ----------
    signals : list of str or Signal
        Columns to watch.  ``"column:kind"`` sets the kind (``feature``,
        ``reference_region``, ``model_output``, ``performance``, ``phantom_rc``,
        ``phantom_calibration``); columns named ``rc_*`` / ``calibration_ratio`` are phantom
        kinds, others ``feature``.  The kind decides the suggestion of an alarm.
    chart : {"cusum", "ewma", "westgard"}, default="cusum"
        Two-sided CUSUM, EWMA, or the Westgard-style rules 1_3s, 2_2s and 10_x for QC
        series (not calibrated to ``arl0``; in control about one alarm in 200 points).
    arl0 : float, default=500
        Target in-control average run length in studies.  With ``split="bonferroni"`` it
        is the network's: on average one false alarm anywhere per ``arl0`` studies of each
        site; with ``split="none"`` it is each chart's.
    shift : float, default=0.5
        The shift to detect quickest, in reference SDs (CUSUM ``k = shift / 2``).
    ewma_lambda : float, default=0.1
        EWMA smoothing constant.
    split : {"bonferroni", "none"}, default="bonferroni"
        How the false-alarm budget is shared by the ``n_sites x n_charts_per_site`` charts
        (see :func:`split_arl0`).
    min_reference : int, default=30
        Fewest reference studies a site needs per signal.
    reference_correction : bool, default=True
        Widen each chart's threshold for the estimation error of its site's reference
        location/scale, so that the expected false-alarm rate is the one asked for.
        Without it, short reference periods raise more false alarms (for ``shift=0.5`` and
        a chart ARL0 of 500: about 2.1 times as many with 100 reference studies, 1.4 times
        with 240); with it, detection is slower for short references.
    harmonizer : sitekit.harmonize.ComBat, default=None
        A fitted ComBat model (fitted on a DataFrame, without ``smooth``) whose site effects
        are checked for staleness; its features (and covariates) must be in the tables.
    window : int, default=30
        New studies per site in one batch-effect test (at least 10); incomplete windows are
        kept until they fill up.
    site_map : dict, default=None
        Site label in the ComBat model for a monitored site, when they differ (after
        ``ComBat.adapt`` under a new label).

    Attributes
    ----------
    sites_ : list of str
        Monitored sites (sorted).
    signals_ : list of Signal
    location_, scale_ : ndarray of shape (n_sites, n_signals)
        Reference median and normalised MAD.
    n_reference_ : ndarray of shape (n_sites, n_signals)
        Reference studies with a value.
    threshold_ : ndarray of shape (n_sites, n_signals)
        CUSUM ``h``, EWMA limit, or 3 (Westgard) per chart.
    chart_arl0_ : float
        In-control ARL of each chart after the split.
    harmonization_threshold_ : float
        ``-log10`` of the per-window significance level ``window / chart_arl0_``.
    history_ : DataFrame
        Every charted point, columns ``HISTORY_COLUMNS`` (``value`` as measured, ``z`` after
        the signal's transform and standardisation).
    alarms_ : DataFrame
        Every alarm so far, columns ``ALARM_COLUMNS``.

    Notes
    -----
    A missing value (NaN) of a signal means "not measured for this study" (e.g. a
    performance value before the label arrives): that chart skips the study.  Studies are
    charted in time order per site; a batch may be unsorted, but a study older than one
    already charted for its site is an error.  After an alarm the chart restarts.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sitekit.monitor import SiteMonitor
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"suv": rng.normal(2.0, 0.2, 200)})
    >>> mon = SiteMonitor(signals=["suv:reference_region"]).fit(ref, sites=["a"] * 200)
    >>> new = pd.DataFrame({"suv": rng.normal(2.3, 0.2, 60)})
    >>> alarms = mon.update(new, sites=["a"] * 60, times=np.arange(60))
    >>> alarms[["site", "signal"]].iloc[0].tolist()
    ['a', 'suv']
    """

    def __init__(self, *, signals, chart="cusum", arl0=500, shift=0.5, ewma_lambda=0.1,
                 split="bonferroni", min_reference=30, reference_correction=True,
                 harmonizer=None, window=30, site_map=None):
        self.signals = signals
        self.chart = chart
        self.arl0 = arl0
        self.shift = shift
        self.ewma_lambda = ewma_lambda
        self.split = split
        self.min_reference = min_reference
        self.reference_correction = reference_correction
        self.harmonizer = harmonizer
        self.window = window
        self.site_map = site_map

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> list[Signal]:
        owner = "SiteMonitor"
        check_option(self.chart, _CHARTS, name="chart", owner=owner)
        check_number(self.arl0, name="arl0", owner=owner, low=2)
        check_number(self.shift, name="shift", owner=owner, low=0, low_inclusive=False)
        check_number(self.ewma_lambda, name="ewma_lambda", owner=owner, low=0, high=1,
                     low_inclusive=False)
        check_option(self.split, ("bonferroni", "none"), name="split", owner=owner)
        check_number(self.min_reference, name="min_reference", owner=owner, low=5, integer=True)
        check_bool(self.reference_correction, name="reference_correction", owner=owner)
        check_number(self.window, name="window", owner=owner, low=10, integer=True)
        if self.site_map is not None and not isinstance(self.site_map, dict):
            raise ValidationError(f"The 'site_map' parameter of {owner} must be a dict. "
                                  f"Got {self.site_map!r} instead.")
        if isinstance(self.signals, str | Signal) or not len(self.signals):
            raise ValidationError(f"The 'signals' parameter of {owner} must be a non-empty list "
                                  f"of column names or Signal objects. Got {self.signals!r}.")
        signals = [Signal.coerce(s) for s in self.signals]
        cols = [s.column for s in signals]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValidationError(f"{owner}: signal column(s) {dup} are listed twice.")
        return signals

    def fit(self, X, y=None, *, sites) -> SiteMonitor:
        """Estimate each site's in-control reference and the alarm thresholds.

        Parameters
        ----------
        X : DataFrame of shape (n_samples, n_columns)
            Reference studies with the signal columns (and the harmonizer's features).
        y : None
            Ignored.
        sites : array-like of shape (n_samples,)
            Site of each study.

        Returns
        -------
        self : SiteMonitor

        Raises
        ------
        ValidationError
            A signal column is missing or not numeric, a site has fewer than
            ``min_reference`` values of a signal, or a signal is constant at a site.
        """
        signals = self._check_params()
        owner = "SiteMonitor.fit"
        X = _as_frame(X, owner)
        site_lab = _labels(sites, len(X), "sites", owner)
        values = self._signal_block(X, signals, owner)
        sites_ = sorted(set(site_lab))
        S, P = len(sites_), len(signals)
        loc = np.full((S, P), np.nan)
        scale = np.full((S, P), np.nan)
        nref = np.zeros((S, P), dtype=np.int64)
        for i, s in enumerate(sites_):
            rows = values[site_lab == s]
            for j, sig in enumerate(signals):
                loc[i, j], scale[i, j], nref[i, j] = robust_reference(rows[:, j])
                if nref[i, j] < self.min_reference:
                    raise ValidationError(
                        f"{owner}: site {s!r} has {nref[i, j]} reference value(s) of signal "
                        f"{sig.column!r}, fewer than min_reference={self.min_reference}; add "
                        "reference studies for that site or lower min_reference (shorter "
                        "references raise more false alarms)."
                    )
                if not scale[i, j] > 0:
                    raise ValidationError(
                        f"{owner}: signal {sig.column!r} does not vary at site {s!r} in the "
                        "reference (MAD = 0); drop it or use a longer reference period."
                    )
        harm = None
        if self.harmonizer is not None:
            harm = harmonizer_arrays(self.harmonizer)
            site_map = dict(self.site_map or {})
            unknown = [s for s in sites_ if site_map.get(s, s) not in harm["sites"]]
            if unknown:
                raise UnknownSiteError(
                    f"{owner}: site(s) {unknown} are not in the ComBat model (its sites: "
                    f"{harm['sites']}); pass site_map or adapt the model to those sites."
                )
            _feature_block(X, harm["features"])
        n_per_site = P + (1 if harm is not None else 0)
        self.chart_arl0_ = split_arl0(self.arl0, S * n_per_site, split=self.split)
        self.sites_ = sites_
        self.signals_ = signals
        self.location_, self.scale_, self.n_reference_ = loc, scale, nref
        self.threshold_ = self._thresholds(nref)
        self._harm = harm
        alpha = min(1.0, self.window / self.chart_arl0_)
        self.harmonization_threshold_ = float(-np.log10(alpha))
        n_state = 1 if self.chart == "ewma" else 2
        self.chart_state_ = np.zeros((n_state, S, P))
        self.n_seen_ = np.zeros(S, dtype=np.int64)
        self.last_time_ = np.full(S, np.nan)
        self.time_kind_ = None
        F = len(harm["features"]) if harm else 0
        ncov = self._n_cov()
        self._buffer = np.zeros((0, F))
        self._buffer_cov = np.zeros((0, ncov))
        self._buffer_site = np.zeros(0, dtype=np.int64)
        self._buffer_time = np.zeros(0)
        self.history_ = pd.DataFrame({c: [] for c in HISTORY_COLUMNS})
        self.alarms_ = pd.DataFrame({c: [] for c in ALARM_COLUMNS}).astype(_ALARM_DTYPES)
        for df in (self.history_, self.alarms_):
            for c in ("site", "signal", "kind", "suggestion", "direction", "rule"):
                if c in df.columns:
                    df[c] = df[c].astype(object)
        return self

    def _n_cov(self) -> int:
        if self._harm is None:
            return 0

        return len(covariate_column_names(self._harm["covariate_encoding"]))

    def _thresholds(self, nref: np.ndarray) -> np.ndarray:
        out = np.zeros(nref.shape)
        for idx, n in np.ndenumerate(nref):
            n_ref = int(n) if self.reference_correction else None
            if self.chart == "cusum":
                out[idx] = cusum_threshold(self.chart_arl0_, self.shift / 2.0, n_reference=n_ref)
            elif self.chart == "ewma":
                lam = float(self.ewma_lambda)
                out[idx] = ewma_threshold(self.chart_arl0_, lam, n_reference=n_ref) * np.sqrt(
                    lam / (2.0 - lam))
            else:
                out[idx] = 3.0
        return out

    @staticmethod
    def _signal_block(X: pd.DataFrame, signals: list[Signal], owner: str) -> np.ndarray:
        missing = [s.column for s in signals if s.column not in X.columns]
        if missing:
            raise ValidationError(
                f"{owner}: signal column(s) {missing} are not in the table (its columns: "
                f"{list(X.columns)[:20]}); add them or drop them from 'signals'."
            )
        bad = [s.column for s in signals if not pd.api.types.is_numeric_dtype(X[s.column])
               or pd.api.types.is_bool_dtype(X[s.column])]
        if bad:
            raise ValidationError(f"{owner}: signal column(s) {bad} are not numeric.")
        block = X[[s.column for s in signals]].to_numpy(dtype=float)
        if np.isinf(block).any():
            cols = [s.column for j, s in enumerate(signals) if np.isinf(block[:, j]).any()]
            raise ValidationError(f"{owner}: signal column(s) {cols} contain infinite values.")
        return np.column_stack([s.apply(block[:, j]) for j, s in enumerate(signals)])

    # ------------------------------------------------------------------ update
    def update(self, X, *, sites, times=None) -> pd.DataFrame:
        """Chart new studies and return the alarms they raise.

        The monitor keeps its state, so a nightly job passes only the studies that arrived
        since the last call.

        Parameters
        ----------
        X : DataFrame of shape (n_samples, n_columns)
            New studies with the signal columns (NaN = not measured for that study).
        sites : array-like of shape (n_samples,)
            Site of each study; every site must be one the monitor was fitted on.
        times : array-like of shape (n_samples,), default=None
            When each study was acquired (numbers or dates).  ``None`` numbers the studies
            of each site consecutively.  Within a batch rows are charted in time order;
            a time before the last one already charted for that site is an error.

        Returns
        -------
        alarms : DataFrame
            One row per new alarm, columns ``site, signal, time, statistic, threshold,
            suggestion, kind, direction, study, rule`` (``signal`` is
            ``"harmonization"`` for the batch-effect test; ``direction`` is ``"up"`` or
            ``"down"``; ``study`` counts the site's studies since fit; ``rule`` names the
            Westgard rule, else ``""``).

        Raises
        ------
        UnknownSiteError
            A site the monitor was not fitted on.
        ValidationError
            A missing signal column, or times out of order.
        """
        check_is_fitted(self, "location_")
        owner = "SiteMonitor.update"
        X = _as_frame(X, owner)
        n = len(X)
        site_lab = _labels(sites, n, "sites", owner)
        unknown = sorted(set(site_lab) - set(self.sites_))
        if unknown:
            raise UnknownSiteError(
                f"{owner}: site(s) {unknown} were not in the reference (known: {self.sites_}); "
                "fit a monitor on a reference period that includes them."
            )
        values = self._signal_block(X, self.signals_, owner)
        raw = X[[s.column for s in self.signals_]].to_numpy(dtype=float)
        Yh = Ch = None
        if self._harm is not None:
            Yh = _feature_block(X, self._harm["features"])
            cov_names = [c["name"] for c in self._harm["covariate_encoding"].get("columns", [])]
            cov = X[cov_names] if cov_names else None
            Ch = _covariates(self._harm, cov, n)
        site_idx = np.array([self.sites_.index(s) for s in site_lab], dtype=np.int64)
        if times is None:
            t = np.zeros(n)
            for i in np.unique(site_idx):
                rows = site_idx == i
                start = 0.0 if np.isnan(self.last_time_[i]) else self.last_time_[i] + 1.0
                t[rows] = start + np.arange(rows.sum())
            kind = self.time_kind_ or "number"
            if kind != "number":
                raise ValidationError(f"{owner}: the monitor has seen dates; pass 'times'.")
        else:
            t, kind = _times(times, n, self.time_kind_, owner)
        for i in np.unique(site_idx):
            first = t[site_idx == i].min()
            if np.isfinite(self.last_time_[i]) and first < self.last_time_[i]:
                raise ValidationError(
                    f"{owner}: site {self.sites_[i]!r} has a study at time "
                    f"{self._time_out(np.array([first]), kind)[0]} before the last one already "
                    f"charted ({self._time_out(self.last_time_[i:i + 1], kind)[0]}); pass "
                    "studies in time order (only new studies in each update)."
                )
        self.time_kind_ = kind
        hist, alarms = [], []
        for i in np.unique(site_idx):
            rows = np.flatnonzero(site_idx == i)
            rows = rows[np.argsort(t[rows], kind="stable")]
            h, a = self._chart_site(int(i), values[rows], raw[rows], t[rows])
            hist.append(h)
            alarms.extend(a)
            if self._harm is not None:
                alarms.extend(self._harmonization_site(int(i), Yh[rows], Ch[rows], t[rows]))
            self.n_seen_[i] += rows.size
            self.last_time_[i] = t[rows].max()
        new_hist = pd.concat(hist, ignore_index=True).astype(
            {"site": object, "signal": object, "kind": object}) if hist else None
        if new_hist is not None and len(new_hist):
            new_hist["time"] = self._time_out(new_hist["time"].to_numpy(float), kind)
            self.history_ = (new_hist if not len(self.history_)
                             else pd.concat([self.history_, new_hist], ignore_index=True))
        out = pd.DataFrame(alarms, columns=ALARM_COLUMNS).astype(_ALARM_DTYPES)
        out["time"] = self._time_out(out["time"].to_numpy(float), kind)
        if len(out):
            out = out.sort_values(["time", "site", "signal"], kind="stable").reset_index(drop=True)
            self.alarms_ = out if not len(self.alarms_) else pd.concat([self.alarms_, out],
                                                                       ignore_index=True)
        return out

    @staticmethod
    def _time_out(t: np.ndarray, kind: str | None):
        if kind == "datetime":
            return pd.to_datetime(np.asarray(t).astype("int64"))
        return np.asarray(t, dtype=float)

    def _chart_site(self, i: int, values: np.ndarray, raw: np.ndarray, t: np.ndarray):
        z = (values - self.location_[i]) / self.scale_[i]
        thr = self.threshold_[i]
        rule = None
        state = self.chart_state_[:, i, :]
        if self.chart == "cusum":
            stat, direction, alarm, new_state = _charts.cusum(z, k=self.shift / 2.0, h=thr,
                                                              state=state)
        elif self.chart == "ewma":
            stat, direction, alarm, new_state = _charts.ewma(z, lam=float(self.ewma_lambda),
                                                             limit=thr, state=state)
        else:
            stat, direction, alarm, rule, new_state = _charts.westgard(z, state=state)
        self.chart_state_[:, i, :] = new_state
        study = self.n_seen_[i] + 1 + np.arange(len(t))
        ok = np.isfinite(z)
        r, c = np.nonzero(ok)
        site = self.sites_[i]
        hist = pd.DataFrame({
            "site": site,
            "signal": [self.signals_[j].column for j in c],
            "kind": [self.signals_[j].kind for j in c],
            "study": study[r],
            "time": t[r],
            "value": raw[r, c],
            "z": z[r, c],
            "statistic": stat[r, c],
            "threshold": thr[c],
            "alarm": alarm[r, c],
        }, columns=HISTORY_COLUMNS)
        alarms = []
        for rr, cc in zip(*np.nonzero(alarm)):
            sig = self.signals_[cc]
            up = direction[rr, cc] > 0
            rl = "" if rule is None else str(rule[rr, cc])
            alarms.append({
                "site": site, "signal": sig.column, "time": t[rr],
                "statistic": float(stat[rr, cc]), "threshold": float(thr[cc]),
                "suggestion": SUGGESTIONS[sig.kind] + f" ({sig.column} "
                              f"{'higher' if up else 'lower'} than the site's reference)",
                "kind": sig.kind, "direction": "up" if up else "down",
                "study": int(study[rr]), "rule": rl,
            })
        return hist, alarms

    def _harmonization_site(self, i: int, Y: np.ndarray, C: np.ndarray, t: np.ndarray):
        self._buffer = np.vstack([self._buffer, Y])
        self._buffer_cov = np.vstack([self._buffer_cov, C])
        self._buffer_site = np.concatenate([self._buffer_site, np.full(len(Y), i)])
        self._buffer_time = np.concatenate([self._buffer_time, t])
        label = dict(self.site_map or {}).get(self.sites_[i], self.sites_[i])
        model_i = self._harm["sites"].index(label)
        alarms = []
        while True:
            mine = np.flatnonzero(self._buffer_site == i)
            if mine.size < self.window:
                break
            take = mine[: self.window]
            res = _window_test(self._buffer[take], self._buffer_cov[take], self._harm, model_i)
            keep = np.ones(len(self._buffer_site), dtype=bool)
            keep[take] = False
            t_end = float(self._buffer_time[take].max())
            self._buffer, self._buffer_cov = self._buffer[keep], self._buffer_cov[keep]
            self._buffer_site, self._buffer_time = self._buffer_site[keep], self._buffer_time[keep]
            if res["statistic"] > self.harmonization_threshold_:
                up = res["location_shift"] >= 0 if res["test"] == "location" else \
                    res["scale_ratio"] >= 1
                alarms.append({
                    "site": self.sites_[i], "signal": HARMONIZATION, "time": t_end,
                    "statistic": res["statistic"], "threshold": self.harmonization_threshold_,
                    "suggestion": SUGGESTIONS[HARMONIZATION] + f" (largest change: {res['test']} "
                                  f"of {res['feature']}, p = {res['p_value']:.2g})",
                    "kind": HARMONIZATION, "direction": "up" if up else "down",
                    "study": int(self.n_seen_[i] + len(t)), "rule": "",
                })
        return alarms

    def set_harmonizer(self, model, *, site_map=None) -> SiteMonitor:
        """Watch another ComBat model from now on (e.g. after :meth:`ComBat.adapt`).

        The open (incomplete) batch-effect windows are dropped; the feature charts keep
        running.

        Parameters
        ----------
        model : sitekit.harmonize.ComBat
            The new fitted model, with the same features as the old one.
        site_map : dict, default=None
            Monitored site -> its label in ``model`` (e.g. ``{"site_B": "site_B@2027"}``
            after adapting the site under a new label).

        Returns
        -------
        self : SiteMonitor
        """
        check_is_fitted(self, "location_")
        harm = harmonizer_arrays(model)
        site_map = dict(site_map or {})
        unknown = [s for s in self.sites_ if site_map.get(s, s) not in harm["sites"]]
        if unknown:
            raise UnknownSiteError(
                f"SiteMonitor.set_harmonizer: site(s) {unknown} are not in the ComBat model "
                f"(its sites: {harm['sites']}); pass site_map."
            )
        if self._harm is not None and harm["features"] != self._harm["features"]:
            raise ValidationError("SiteMonitor.set_harmonizer: the new model has other features "
                                  "than the old one; fit a new monitor.")
        self.harmonizer, self.site_map, self._harm = model, site_map, harm
        F, ncov = len(harm["features"]), self._n_cov()
        self._buffer, self._buffer_cov = np.zeros((0, F)), np.zeros((0, ncov))
        self._buffer_site, self._buffer_time = np.zeros(0, dtype=np.int64), np.zeros(0)
        return self

    # ------------------------------------------------------------------ reporting
    def summary(self) -> pd.DataFrame:
        """A per-site monitoring summary (for a post-market monitoring file).

        Returns
        -------
        DataFrame
            Columns ``site, n_reference, n_studies, n_alarms, signals_alarmed, last_alarm,
            status, suggestion``: ``status`` is ``"alarm"`` when the site raised an alarm,
            else ``"in control"``; ``suggestion`` is the suggestion of the latest alarm.
        """
        check_is_fitted(self, "location_")
        rows = []
        for i, s in enumerate(self.sites_):
            a = self.alarms_[self.alarms_["site"] == s] if len(self.alarms_) else self.alarms_
            rows.append({
                "site": s,
                "n_reference": int(self.n_reference_[i].min()),
                "n_studies": int(self.n_seen_[i]),
                "n_alarms": len(a),
                "signals_alarmed": ", ".join(sorted(set(a["signal"]))) if len(a) else "",
                "last_alarm": a["time"].iloc[-1] if len(a) else None,
                "status": "alarm" if len(a) else "in control",
                "suggestion": a["suggestion"].iloc[-1] if len(a) else "",
            })
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)

    def parameters(self) -> dict:
        """The monitor's settings and calibration as a JSON-ready dict."""
        return to_jsonable({
            "signals": [{"column": s.column, "kind": s.kind, "transform": s.transform}
                        for s in self.signals_],
            "chart": self.chart, "arl0": self.arl0, "shift": self.shift,
            "ewma_lambda": self.ewma_lambda, "split": self.split,
            "min_reference": self.min_reference,
            "reference_correction": self.reference_correction, "window": self.window,
            "site_map": dict(self.site_map or {}), "chart_arl0": self.chart_arl0_,
            "harmonization_threshold": self.harmonization_threshold_,
            "n_charts": int(len(self.sites_) * (len(self.signals_) + (self._harm is not None))),
            "calibration": ("Markov chain (Brook & Evans) for CUSUM, (Lucas & Saccucci) for "
                            "EWMA; Bonferroni split" if self.chart != "westgard"
                            else "Westgard rules 1_3s, 2_2s, 10_x"),
        })

    def write_results(self, path: PathLike, *, force: bool = False) -> Path:
        """Write the results folder the report reads (atomically).

        The folder holds ``monitor.json`` (the marker: parameters, sites, counts),
        ``history.csv`` (:attr:`history_`), ``alarms.csv`` (:attr:`alarms_`),
        ``summary.csv`` (:meth:`summary`) and ``reference.csv`` (per site and signal:
        ``location, scale, n_reference, threshold``).

        Parameters
        ----------
        path : str or path-like
            The folder to write.
        force : bool, default=False
            Replace an existing folder.

        Returns
        -------
        pathlib.Path
        """
        summary = self.summary()
        ref = pd.DataFrame([
            {"site": s, "signal": sig.column, "kind": sig.kind,
             "location": self.location_[i, j], "scale": self.scale_[i, j],
             "n_reference": int(self.n_reference_[i, j]), "threshold": self.threshold_[i, j]}
            for i, s in enumerate(self.sites_) for j, sig in enumerate(self.signals_)
        ])
        doc = {
            "kind": "sitekit-monitor-results",
            "schema_version": 1,
            "parameters": self.parameters(),
            "sites": self.sites_,
            "n_alarms": len(self.alarms_),
            "time_kind": self.time_kind_,
        }
        with atomic_directory(path, force=force) as tmp:
            (tmp / "monitor.json").write_text(json.dumps(to_jsonable(doc), indent=2))
            self.history_.to_csv(tmp / "history.csv", index=False)
            self.alarms_.to_csv(tmp / "alarms.csv", index=False)
            summary.to_csv(tmp / "summary.csv", index=False)
            ref.to_csv(tmp / "reference.csv", index=False)
        return Path(path)

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike, *, force: bool = False, metadata: dict | None = None) -> Path:
        """Save the fitted monitor and its chart state (no pickle; atomic).

        Parameters
        ----------
        path : str or path-like
            A folder; the state goes to ``<path>/state.npz`` (arrays, JSON metadata and a
            SHA-256 over both).  The folder is created if needed.
        force : bool, default=False
            Replace an existing state (the nightly job passes ``force=True``).  The old
            state is replaced in one rename: a crash during saving leaves it intact.
        metadata : dict, default=None
            JSON-ready extras stored with the state (the CLI keeps its column names and the
            hashes of the tables already fed); :meth:`load` returns them as
            ``saved_metadata_``.

        Returns
        -------
        pathlib.Path
            The state file.
        """
        check_is_fitted(self, "location_")
        arrays = {
            "location": self.location_, "scale": self.scale_, "n_reference": self.n_reference_,
            "threshold": self.threshold_, "chart_state": self.chart_state_,
            "n_seen": self.n_seen_, "last_time": self.last_time_,
            "buffer": self._buffer, "buffer_cov": self._buffer_cov,
            "buffer_site": self._buffer_site, "buffer_time": self._buffer_time,
        }
        for name, df in (("history", self.history_), ("alarms", self.alarms_)):
            for col in df.columns:
                v = df[col]
                if col == "time":
                    a = (pd.to_datetime(v).astype("int64").to_numpy().astype(float)
                         if self.time_kind_ == "datetime" and len(v) else v.to_numpy(float))
                elif col in ("site", "signal", "kind", "suggestion", "direction", "rule"):
                    a = v.astype(str).to_numpy().astype(str)
                elif col == "alarm":
                    a = v.to_numpy().astype(bool)
                else:
                    a = v.to_numpy(float)
                arrays[f"{name}/{col}"] = a
        harm = None
        if self._harm is not None:
            harm = {k: v for k, v in self._harm.items() if not isinstance(v, np.ndarray)}
            for k, v in self._harm.items():
                if isinstance(v, np.ndarray):
                    arrays[f"harmonizer/{k}"] = v
        meta = {
            "params": {
                "signals": [[s.column, s.kind, s.transform] for s in self.signals_],
                "chart": self.chart,
                "arl0": self.arl0, "shift": self.shift, "ewma_lambda": self.ewma_lambda,
                "split": self.split, "min_reference": self.min_reference,
                "reference_correction": self.reference_correction, "window": self.window,
                "site_map": self.site_map,
            },
            "sites": self.sites_, "chart_arl0": self.chart_arl0_,
            "harmonization_threshold": self.harmonization_threshold_,
            "time_kind": self.time_kind_, "harmonizer": harm, "user": metadata or {},
        }
        target = Path(path) / _STATE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        return _state._write(target, arrays, meta, force)

    @classmethod
    def load(cls, path: PathLike) -> SiteMonitor:
        """Load a monitor saved with :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            The folder given to :meth:`save` (or its ``state.npz``).

        Returns
        -------
        SiteMonitor

        Raises
        ------
        MissingFileError, ModelFileError
            No state there, or a truncated, edited or newer-version file.
        """
        p = Path(path)
        arrays, meta = _state._read(p / _STATE_FILE if p.is_dir() else p)
        prm = meta["params"]
        signals = [Signal(*spec) for spec in prm["signals"]]
        mon = cls(signals=signals, chart=prm["chart"],
                  arl0=prm["arl0"], shift=prm["shift"], ewma_lambda=prm["ewma_lambda"],
                  split=prm["split"], min_reference=prm["min_reference"],
                  reference_correction=prm["reference_correction"], window=prm["window"],
                  site_map=prm["site_map"])
        mon.signals_ = signals
        mon.sites_ = list(meta["sites"])
        mon.chart_arl0_ = float(meta["chart_arl0"])
        mon.harmonization_threshold_ = float(meta["harmonization_threshold"])
        mon.time_kind_ = meta["time_kind"]
        mon.saved_metadata_ = dict(meta.get("user") or {})
        mon.location_, mon.scale_ = arrays["location"], arrays["scale"]
        mon.n_reference_, mon.threshold_ = arrays["n_reference"], arrays["threshold"]
        mon.chart_state_ = arrays["chart_state"].astype(float)
        mon.n_seen_, mon.last_time_ = arrays["n_seen"].astype(np.int64), arrays["last_time"]
        mon._buffer, mon._buffer_cov = arrays["buffer"], arrays["buffer_cov"]
        mon._buffer_site, mon._buffer_time = arrays["buffer_site"], arrays["buffer_time"]
        mon._harm = None
        if meta["harmonizer"] is not None:
            harm = dict(meta["harmonizer"])
            for k in list(arrays):
                if k.startswith("harmonizer/"):
                    harm[k.split("/", 1)[1]] = arrays[k]
            mon._harm = harm
        for name, cols in (("history", HISTORY_COLUMNS), ("alarms", ALARM_COLUMNS)):
            df = pd.DataFrame({c: arrays[f"{name}/{c}"] for c in cols})
            df = df.astype({c: object for c in cols if arrays[f"{name}/{c}"].dtype.kind == "U"})
            if len(df):
                df["time"] = cls._time_out(df["time"].to_numpy(float), mon.time_kind_)
                for c in ("study",):
                    df[c] = df[c].astype(np.int64)
            setattr(mon, f"{name}_", df)
        return mon

"""Figures are tested by their data: lines, labels, shaded bands, images (Agg, closed)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from sitekit.exceptions import ValidationError  # noqa: E402
from sitekit.reports import figures as F  # noqa: E402
from sitekit.reports.html import embed_figure  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _band_vertices(ax):
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert polys, "no shaded band"
    return polys[0].get_paths()[0].vertices


def test_rc_curve_band_lines_and_failures():
    df = pd.DataFrame({
        "site": ["A"] * 3 + ["B"] * 3,
        "sphere_mm": [10, 22, 37] * 2,
        "rc": [0.3, 0.7, 0.8, 0.1, 0.7, 0.95],
        "lower": [0.27, 0.63, 0.76] * 2,
        "upper": [0.43, 0.78, 0.89] * 2,
    })
    df["passed"] = (df["rc"] >= df["lower"]) & (df["rc"] <= df["upper"])
    ax = F.plot_rc_curve(df, title="EARL1 rc_a50")
    v = _band_vertices(ax)
    # the band spans the limits at each sphere
    assert v[:, 1].min() == pytest.approx(0.27) and v[:, 1].max() == pytest.approx(0.89)
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels[:1] == ["A"] and "B" in labels
    line_b = ax.get_lines()[labels.index("B")]
    np.testing.assert_allclose(line_b.get_ydata(), [0.1, 0.7, 0.95])
    fail = [ln for ln in ax.get_lines() if ln.get_label() == "_fail"]
    assert len(fail) == 1  # only site B has spheres out of band
    np.testing.assert_allclose(fail[0].get_xdata(), [10, 37])
    assert ax.get_xlabel() == "sphere diameter (mm)" and ax.get_title() == "EARL1 rc_a50"


def test_rc_vs_fwhm_lines_per_sphere_and_chosen_line():
    f = np.arange(0, 8.0)
    df = pd.concat([pd.DataFrame({"fwhm_mm": f, "sphere_mm": s, "rc": 1 - f / (s + 5)}) for s in (10, 37)])
    ax = F.plot_rc_vs_fwhm(df, chosen_fwhm=6.2, compliant=(5.0, 7.5))
    span = [p for p in ax.patches if p.get_label() == "compliant"]
    assert len(span) == 1
    xs = span[0].get_patch_transform().transform(span[0].get_path().vertices)[:, 0]
    assert (xs.min(), xs.max()) == pytest.approx((5.0, 7.5))
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert {"10 mm", "37 mm", "chosen"} <= set(lines)
    np.testing.assert_allclose(lines["chosen"].get_xdata(), [6.2, 6.2])
    np.testing.assert_allclose(lines["10 mm"].get_ydata(), 1 - f / 15)


def test_site_effect_share_and_predictability_bars():
    ax = F.plot_site_effect_share(pd.DataFrame({"stage": ["before", "after"], "share": [0.9, 0.1]}))
    assert [p.get_height() for p in ax.patches] == pytest.approx([90, 10])
    ax = F.plot_site_predictability(pd.DataFrame({"stage": ["before", "after"], "auc": [0.95, 0.52]}))
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.95, 0.52])
    ys = sorted(ln.get_ydata()[0] for ln in ax.get_lines())
    assert ys == pytest.approx([0.5, 0.625])


def test_pca_and_boxplots_by_site():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"pc1": rng.normal(size=30), "pc2": rng.normal(size=30),
                       "site": np.repeat(["a", "b", "c"], 10)})
    ax = F.plot_pca_sites(df, title="before")
    assert len(ax.collections) == 3
    assert [c.get_offsets().shape[0] for c in ax.collections] == [10, 10, 10]
    long = pd.DataFrame({"site": np.tile(np.repeat(["a", "b"], 5), 2), "value": rng.normal(size=20),
                         "stage": np.repeat(["before", "after"], 10)})
    ax = F.plot_site_boxplots(long, feature="f1")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert ax.get_title() == "f1"


def test_eb_prior_density_integrates_to_one():
    g = np.random.default_rng(1).normal(0.3, 0.5, size=200)
    ax = F.plot_eb_prior(pd.DataFrame({"gamma_hat": g}), gamma_bar=0.3, tau2=0.25)
    prior = [ln for ln in ax.get_lines() if ln.get_label() == "prior"][0]
    x, y = prior.get_xdata(), prior.get_ydata()
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.01)
    assert x[np.argmax(y)] == pytest.approx(0.3, abs=0.05)


def test_icc_distribution_heatmap_and_counts():
    icc = np.array([0.95, 0.5, 0.99, 0.2])
    df = pd.DataFrame({"feature": ["f1", "f2", "f3", "f4"] * 2,
                       "perturbation": ["noise"] * 4 + ["blur"] * 4, "icc": np.r_[icc, icc[::-1]]})
    ax = F.plot_icc_distribution(df, threshold=0.9)
    assert sum(p.get_height() for p in ax.patches) == 8
    assert [ln.get_xdata()[0] for ln in ax.get_lines()] == [0.9]
    ax = F.plot_icc_heatmap(df)
    mat = ax.images[0].get_array()
    assert mat.shape == (4, 2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["blur", "noise"]
    ax = F.plot_robust_counts(pd.DataFrame({"group": ["glcm", "shape"], "n_robust": [2, 5],
                                            "n_total": [10, 6]}))
    assert [p.get_height() for p in ax.patches] == [10, 6, 2, 5]


def test_stress_curves_with_ci_bands():
    df = pd.DataFrame({"perturbation": ["noise"] * 3, "severity": [0, 1, 2],
                       "score": [0.8, 0.7, 0.6], "ci_low": [0.75, 0.65, 0.5],
                       "ci_high": [0.85, 0.75, 0.7], "metric": "roc_auc"})
    ax = F.plot_stress_curves(df)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.8, 0.7, 0.6])
    v = _band_vertices(ax)
    assert v[:, 1].min() == pytest.approx(0.5) and v[:, 1].max() == pytest.approx(0.85)
    assert ax.get_ylabel() == "roc_auc"


def test_forest_plot_error_bars():
    df = pd.DataFrame({"site": ["A", "B"], "value": [0.7, 0.6], "ci_low": [0.6, 0.4],
                       "ci_high": [0.8, 0.7], "metric": "roc_auc"})
    ax = F.plot_site_forest(df, reference=0.5)
    container = ax.containers[0]
    np.testing.assert_allclose(container.lines[0].get_xdata(), [0.7, 0.6])
    segs = container.lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 0] for s in segs], [[0.6, 0.8], [0.4, 0.7]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B"]


def test_adversarial_distances_histogram_and_median():
    d = np.array([0.1, 0.2, 0.3, 1.0, np.inf])
    ax = F.plot_adversarial_distances(pd.DataFrame({"distance": d}))
    assert sum(p.get_height() for p in ax.patches) == 4  # inf (never flips) not drawn
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(0.25)


def test_missing_columns_named():
    with pytest.raises(ValidationError, match="sphere_mm"):
        F.plot_rc_curve(pd.DataFrame({"rc": [1.0]}))


def test_draws_on_given_axes_and_embeds():
    fig, ax = plt.subplots()
    out = F.plot_icc_distribution(pd.DataFrame({"icc": [0.1, 0.95]}), ax=ax)
    assert out is ax
    uri = embed_figure(ax)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert not plt.get_fignums()  # the pyplot figure was closed
    png = embed_figure(F.plot_icc_distribution(pd.DataFrame({"icc": [0.5]})), format="png")
    assert png.startswith("data:image/png;base64,")


def test_calibration_by_site_lines_and_diagonal():
    df = pd.DataFrame({"site": ["a", "a", "b"], "mean_predicted": [0.2, 0.7, 0.5],
                       "observed": [0.25, 0.6, 0.9]})
    ax = F.plot_calibration_by_site(df)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["perfect"].get_ydata(), [0, 1])
    np.testing.assert_allclose(lines["a"].get_xdata(), [0.2, 0.7])
    np.testing.assert_allclose(lines["b"].get_ydata(), [0.9])


def test_eb_scale_prior_is_inverse_gamma_density():
    from scipy import stats

    d = stats.invgamma(a=5.0, scale=4.0).rvs(size=300, random_state=0)
    ax = F.plot_eb_prior_scale(pd.DataFrame({"delta_hat": d}), a_prior=5.0, b_prior=4.0)
    prior = [ln for ln in ax.get_lines() if ln.get_label() == "prior"][0]
    x, y = prior.get_xdata(), prior.get_ydata()
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.02)
    assert x[np.argmax(y)] == pytest.approx(4.0 / 6.0, abs=0.02)  # mode b / (a + 1)


def test_stress_curve_y_axis_has_a_minimum_span():
    """Regression (issue 14 item 8): a 0.0007 calibration-shift change filled the whole y axis
    and looked like a cliff; the axis now spans at least 0.1 score units around the data."""
    df = pd.DataFrame({"perturbation": ["calibration"] * 4, "severity": [0.9, 0.95, 1.05, 1.1],
                       "score": [0.8117, 0.8120, 0.8124, 0.8118], "baseline": 0.8121,
                       "metric": "roc_auc"})
    ax = F.plot_stress_curves(df)
    lo, hi = ax.get_ylim()
    assert hi - lo == pytest.approx(0.1)
    assert lo < 0.8117 and hi > 0.8124
    base = [ln for ln in ax.get_lines() if ln.get_label() == "baseline"]
    assert base and base[0].get_ydata()[0] == pytest.approx(0.8121)
    # a real fall keeps the data's own scale
    ax = F.plot_stress_curves(df.assign(score=[0.8, 0.6, 0.5, 0.3]))
    assert ax.get_ylim()[1] - ax.get_ylim()[0] > 0.5


def test_calibration_by_site_draws_a_band_per_site():
    """Regression (issue 14 item 8): the per-site reliability curves had no uncertainty."""
    df = pd.DataFrame({"site": ["a", "a", "b", "b"], "mean_predicted": [0.2, 0.7, 0.3, 0.6],
                       "observed": [0.25, 0.6, 0.2, 0.7], "ci_low": [0.1, 0.4, 0.05, 0.5],
                       "ci_high": [0.45, 0.8, 0.45, 0.85]})
    ax = F.plot_calibration_by_site(df)
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(polys) == 2
    v = polys[0].get_paths()[0].vertices
    assert v[:, 1].min() == pytest.approx(0.1) and v[:, 1].max() == pytest.approx(0.8)

"""EARL standards: shipped values pinned, schema checked, unverified columns flagged (issue 4)."""

import json

import pytest

from sitekit.exceptions import CorruptFileError, ValidationError
from sitekit.harmonize import earl

EARL1 = {  # DOMAIN.md section 2: sphere: (A50 min, A50 max, MAX min, MAX max)
    37: (0.76, 0.89, 0.95, 1.16), 28: (0.72, 0.85, 0.91, 1.13), 22: (0.63, 0.78, 0.83, 1.09),
    17: (0.57, 0.73, 0.73, 1.01), 13: (0.44, 0.60, 0.59, 0.85), 10: (0.27, 0.43, 0.34, 0.57),
}
EARL2 = {  # sphere: (A50 min, max, MAX min, max, PEAK min, max)
    37: (0.85, 1.00, 1.05, 1.29, 0.99, 1.07), 28: (0.82, 0.97, 1.01, 1.26, 0.95, 1.07),
    22: (0.80, 0.99, 1.01, 1.32, 0.90, 1.09), 17: (0.76, 0.97, 1.00, 1.38, 0.75, 0.99),
    13: (0.63, 0.86, 0.85, 1.22, 0.45, 0.60), 10: (0.39, 0.61, 0.52, 0.88, 0.27, 0.38),
}


def _band(std, d, metric):
    b = std.bands[(std.bands.sphere_mm == d) & (std.bands.metric == metric)].iloc[0]
    return b.lower, b.upper, b.verified


def test_earl1_values_pinned():
    std = earl.load_standard("EARL1")
    assert std.metrics == ("A50", "MAX")
    for d, (a_lo, a_hi, m_lo, m_hi) in EARL1.items():
        assert _band(std, d, "A50") == (a_lo, a_hi, True)
        assert _band(std, d, "MAX") == (m_lo, m_hi, True)


def test_earl2_values_pinned_and_peak_unverified():
    """Fails loudly if anyone edits the EARL2 table, PEAK columns included (unverified values)."""
    std = earl.load_standard("earl2")
    for d, (a_lo, a_hi, m_lo, m_hi, p_lo, p_hi) in EARL2.items():
        assert _band(std, d, "A50") == (a_lo, a_hi, True)
        assert _band(std, d, "MAX") == (m_lo, m_hi, True)
        assert _band(std, d, "PEAK") == (p_lo, p_hi, False)
    peak = std.bands[std.bands.metric == "PEAK"]
    assert peak["note"].str.contains("UNVERIFIED").all()


def test_unknown_standard_did_you_mean():
    with pytest.raises(ValidationError, match="Did you mean 'EARL1'"):
        earl.load_standard("EARL11")


def _std_doc(**change):
    d = {"format": "sitekit-earl-standard", "schema_version": 1, "standard": "X", "version": "v", "source": "s",
         "sphere_mm": [37, 10], "metrics": {"MAX": {"lower": [0.9, 0.3], "upper": [1.1, 0.5], "verified": True}}}
    d.update(change)
    return d


@pytest.mark.parametrize("change, msg", [
    ({"metrics": {"MAX": {"lower": [0.9, 0.6], "upper": [1.1, 0.5], "verified": True}}}, "lower < upper"),
    ({"metrics": {"MAX": {"lower": [0.9, 0.3], "upper": [1.1, 0.5], "verified": False}}}, "note"),
    ({"metrics": {"MEAN": {"lower": [0.9, 0.3], "upper": [1.1, 0.5], "verified": True}}}, "unknown metric"),
    ({"sphere_mm": [37]}, "lists of 1"),
    ({"schema_version": 2}, "schema_version"),
])
def test_schema_errors(tmp_path, change, msg):
    p = tmp_path / "std.json"
    p.write_text(json.dumps(_std_doc(**change)))
    with pytest.raises(CorruptFileError, match=msg):
        earl.load_standard(p)


def test_custom_standard_file(tmp_path):
    p = tmp_path / "std.json"
    p.write_text(json.dumps(_std_doc()))
    std = earl.load_standard(p)
    assert std.name == "X" and len(std.bands) == 2

"""Fill description of a phantom: measured activities -> true concentrations at scan start.

The JSON format (all times ISO 8601, local clock of the site; activities in MBq, volumes in mL)::

    {
      "isotope": "F-18",
      "half_life_s": 6586.2,
      "scan_start": "2026-03-02T10:00:00",
      "stated_ratio": 10.0,
      "sphere": {"activity_mbq": 2.31, "volume_ml": 100.0, "measured_at": "2026-03-02T09:10:00",
                 "residual_mbq": 0.0, "residual_measured_at": null},
      "background": {"activity_mbq": 21.4, "volume_ml": 9700.0, "measured_at": "2026-03-02T09:20:00",
                     "residual_mbq": 0.0, "residual_measured_at": null}
    }

``sphere`` describes the stock solution the spheres were filled from; ``background`` the
activity put into the weighed background volume.  A residual activity (left in the syringe)
is subtracted after decay-correcting it from its own measurement time.  Concentrations at
scan start are ``(A(t_meas) * 2^(-(t_scan - t_meas)/T) - residual) / volume`` in Bq/mL.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from sitekit._typing import PathLike
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError

__all__ = ["Compartment", "FillDescription", "decay_correct", "read_fill"]


def decay_correct(activity: float, *, from_time: datetime, to_time: datetime, half_life_s: float) -> float:
    """Decay ``activity`` measured at ``from_time`` to ``to_time`` (later times -> less activity)."""
    dt = (to_time - from_time).total_seconds()
    return activity * 2.0 ** (-dt / half_life_s)


def _parse_time(value, *, name: str) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ValidationError(
            f"Fill field '{name}' must be an ISO 8601 time such as '2026-03-02T10:00:00'. Got {value!r}."
        ) from exc


@dataclass
class Compartment:
    """Activity put into one compartment (the sphere stock or the background)."""

    activity_mbq: float
    volume_ml: float
    measured_at: datetime
    residual_mbq: float = 0.0
    residual_measured_at: datetime | None = None

    def concentration_bq_ml(self, scan_start: datetime, half_life_s: float) -> float:
        """Concentration in Bq/mL at ``scan_start``."""
        a = decay_correct(self.activity_mbq, from_time=self.measured_at, to_time=scan_start, half_life_s=half_life_s)
        if self.residual_mbq:
            t_res = self.residual_measured_at or self.measured_at
            a -= decay_correct(self.residual_mbq, from_time=t_res, to_time=scan_start, half_life_s=half_life_s)
        return a * 1e6 / self.volume_ml


@dataclass
class FillDescription:
    """How a phantom was filled; see the module docstring for the JSON format."""

    scan_start: datetime
    sphere: Compartment
    background: Compartment
    isotope: str = "F-18"
    half_life_s: float = 6586.2
    stated_ratio: float | None = 10.0
    extra: dict = field(default_factory=dict)

    @property
    def sphere_conc(self) -> float:
        """True sphere concentration at scan start (Bq/mL)."""
        return self.sphere.concentration_bq_ml(self.scan_start, self.half_life_s)

    @property
    def background_conc(self) -> float:
        """True background concentration at scan start (Bq/mL)."""
        return self.background.concentration_bq_ml(self.scan_start, self.half_life_s)

    def to_dict(self) -> dict:
        """JSON-ready dict (times as ISO strings)."""

        def conv(v):
            if isinstance(v, datetime):
                return v.isoformat()
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v

        d = conv(asdict(self))
        extra = d.pop("extra")
        d.update(extra)
        return d

    def to_json(self, path: PathLike) -> None:
        """Write the description as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "fill") -> FillDescription:
        """Build from a dict in the JSON format, with errors naming the missing field."""
        def compartment(key: str) -> Compartment:
            if key not in d or not isinstance(d[key], dict):
                raise ValidationError(f"{source}: the '{key}' section is missing; see the fill format in the README.")
            c = d[key]
            for req in ("activity_mbq", "volume_ml", "measured_at"):
                if req not in c:
                    raise ValidationError(f"{source}: field '{key}.{req}' is missing.")
            vol = float(c["volume_ml"])
            if not (vol > 0 and math.isfinite(vol)):
                raise ValidationError(f"{source}: '{key}.volume_ml' must be > 0. Got {c['volume_ml']!r}.")
            act = float(c["activity_mbq"])
            if not (act > 0 and math.isfinite(act)):
                raise ValidationError(f"{source}: '{key}.activity_mbq' must be > 0. Got {c['activity_mbq']!r}.")
            res_t = c.get("residual_measured_at")
            return Compartment(
                activity_mbq=act,
                volume_ml=vol,
                measured_at=_parse_time(c["measured_at"], name=f"{key}.measured_at"),
                residual_mbq=float(c.get("residual_mbq", 0.0) or 0.0),
                residual_measured_at=_parse_time(res_t, name=f"{key}.residual_measured_at") if res_t else None,
            )

        if "scan_start" not in d:
            raise ValidationError(f"{source}: field 'scan_start' is missing.")
        known = {"scan_start", "sphere", "background", "isotope", "half_life_s", "stated_ratio"}
        fill = cls(
            scan_start=_parse_time(d["scan_start"], name="scan_start"),
            sphere=compartment("sphere"),
            background=compartment("background"),
            isotope=str(d.get("isotope", "F-18")),
            half_life_s=float(d.get("half_life_s", 6586.2)),
            stated_ratio=None if d.get("stated_ratio") is None else float(d["stated_ratio"]),
            extra={k: v for k, v in d.items() if k not in known},
        )
        if not fill.background_conc > 0 or not fill.sphere_conc > 0:
            raise ValidationError(f"{source}: the residual activity exceeds the activity; check the fill values.")
        return fill


def read_fill(path: PathLike) -> FillDescription:
    """Read a fill description JSON file."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"Fill file '{p}' does not exist.")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Fill file '{p}' is not valid JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise CorruptFileError(f"Fill file '{p}' must hold a JSON object.")
    return FillDescription.from_dict(d, source=f"Fill file '{p}'")

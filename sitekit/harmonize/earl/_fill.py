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

Checks (each failure names the field): numbers must be JSON numbers (not ``null`` or
``"2,74"``), activities and volumes > 0; the isotope must be one of :data:`HALF_LIVES_S` or
come with ``half_life_s``, and a given half-life must agree with the table within 1 %; times
are all with or all without a UTC offset; the activities must be measured before the scan
starts and no more than :data:`MAX_DECAY_HALF_LIVES` half-lives before it; the sphere
concentration must be above the background concentration.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from sitekit._typing import PathLike
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError

__all__ = ["Compartment", "FillDescription", "decay_correct", "read_fill", "HALF_LIVES_S",
           "MAX_DECAY_HALF_LIVES"]

#: Physical half-lives (s) of the PET isotopes a fill may name (NNDC / DDEP values).
HALF_LIVES_S = {
    "F-18": 6586.2,
    "C-11": 1221.8,
    "N-13": 597.9,
    "O-15": 122.24,
    "Ga-68": 4062.6,
    "Cu-64": 45721.1,
    "Rb-82": 76.38,
    "Zr-89": 282280.0,
    "I-124": 360806.0,
}
#: A fill measured more than this many half-lives before the scan is refused (F-18: ~9 h):
#: the decay correction (a factor of 32 or more) would turn a date typo into a plausible number.
MAX_DECAY_HALF_LIVES = 5.0


def _isotope_key(name: str) -> str | None:
    norm = name.replace(" ", "").replace("-", "").replace("_", "").lower()
    for key in HALF_LIVES_S:
        k = key.replace("-", "").lower()
        if norm in (k, k[len(k.rstrip("0123456789")):] + k.rstrip("0123456789")):  # F18 or 18F
            return key
    return None


def _number(value, *, name: str, source: str, positive: bool = True, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        hint = " (use a decimal point, not a comma)" if isinstance(value, str) and "," in value else ""
        raise ValidationError(f"{source}: field '{name}' must be a number{hint}. Got {value!r}.")
    v = float(value)
    if not math.isfinite(v) or (positive and (v < 0 or (v == 0 and not allow_zero))):
        need = ">= 0" if allow_zero else "> 0"
        raise ValidationError(f"{source}: field '{name}' must be a finite number {need}. Got {value!r}.")
    return v


def decay_correct(activity: float, *, from_time: datetime, to_time: datetime, half_life_s: float) -> float:
    """Decay ``activity`` measured at ``from_time`` to ``to_time`` (later times -> less activity)."""
    dt = (to_time - from_time).total_seconds()
    return activity * 2.0 ** (-dt / half_life_s)


def _parse_time(value, *, name: str) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValidationError(
            f"Fill field '{name}' must be an ISO 8601 time such as '2026-03-02T10:00:00'. Got {value!r}.")
    try:
        return datetime.fromisoformat(value)
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
    def from_dict(cls, d: dict, *, source: str = "fill", check_ratio: bool = True) -> FillDescription:
        """Build from a dict in the JSON format, with errors naming the field at fault.

        Parameters
        ----------
        d : dict
            The fill description (see the module docstring).
        source : str, default="fill"
            What to call it in messages (the file name).
        check_ratio : bool, default=True
            Refuse a sphere concentration that is not above the background (off for a
            uniform cylinder, whose one compartment fills both roles).

        Returns
        -------
        FillDescription
        """
        def compartment(key: str) -> Compartment:
            if key not in d or not isinstance(d[key], dict):
                raise ValidationError(f"{source}: the '{key}' section is missing; see the fill-file format in "
                                      "the EARL user guide (`sitekit earl check --help`).")
            c = d[key]
            for req in ("activity_mbq", "volume_ml", "measured_at"):
                if req not in c:
                    raise ValidationError(f"{source}: field '{key}.{req}' is missing.")
            res_t = c.get("residual_measured_at")
            return Compartment(
                activity_mbq=_number(c["activity_mbq"], name=f"{key}.activity_mbq", source=source),
                volume_ml=_number(c["volume_ml"], name=f"{key}.volume_ml", source=source),
                measured_at=_parse_time(c["measured_at"], name=f"{key}.measured_at"),
                residual_mbq=_number(c.get("residual_mbq", 0.0) if c.get("residual_mbq") is not None else 0.0,
                                     name=f"{key}.residual_mbq", source=source, allow_zero=True),
                residual_measured_at=_parse_time(res_t, name=f"{key}.residual_measured_at") if res_t else None,
            )

        if "scan_start" not in d:
            raise ValidationError(f"{source}: field 'scan_start' is missing.")
        isotope = d.get("isotope", "F-18")
        if not isinstance(isotope, str) or not isotope.strip():
            raise ValidationError(f"{source}: field 'isotope' must be a name such as 'F-18'. Got {isotope!r}.")
        key = _isotope_key(isotope)
        if d.get("half_life_s") is not None:
            half_life = _number(d["half_life_s"], name="half_life_s", source=source)
            if key is not None and abs(half_life / HALF_LIVES_S[key] - 1.0) > 0.01:
                raise ValidationError(
                    f"{source}: field 'half_life_s' is {half_life:g} s but {key} has a half-life of "
                    f"{HALF_LIVES_S[key]:g} s; correct it or leave it out.")
        elif key is not None:
            half_life = HALF_LIVES_S[key]
        else:
            raise ValidationError(
                f"{source}: field 'isotope' is {isotope!r}, whose half-life sitekit does not know "
                f"(known: {', '.join(HALF_LIVES_S)}); give 'half_life_s' in seconds.")
        stated = d.get("stated_ratio")
        known = {"scan_start", "sphere", "background", "isotope", "half_life_s", "stated_ratio"}
        fill = cls(
            scan_start=_parse_time(d["scan_start"], name="scan_start"),
            sphere=compartment("sphere"),
            background=compartment("background"),
            isotope=key or isotope,
            half_life_s=half_life,
            stated_ratio=None if stated is None else _number(stated, name="stated_ratio", source=source),
            extra={k: v for k, v in d.items() if k not in known},
        )
        fill._check_times(source)
        if not fill.background_conc > 0 or not fill.sphere_conc > 0:
            raise ValidationError(f"{source}: the residual activity exceeds the activity; check the fill values.")
        if check_ratio and fill.sphere_conc <= fill.background_conc:
            raise ValidationError(
                f"{source}: the sphere concentration ({fill.sphere_conc:.6g} Bq/mL at scan start) is not above "
                f"the background concentration ({fill.background_conc:.6g} Bq/mL); check the 'sphere' and "
                "'background' sections (swapped?) and their volumes.")
        return fill

    def _check_times(self, source: str) -> None:
        times = {"scan_start": self.scan_start}
        for key in ("sphere", "background"):
            c = getattr(self, key)
            times[f"{key}.measured_at"] = c.measured_at
            if c.residual_measured_at is not None:
                times[f"{key}.residual_measured_at"] = c.residual_measured_at
        aware = {k for k, t in times.items() if t.tzinfo is not None}
        if aware and len(aware) != len(times):
            naive = sorted(set(times) - aware)
            raise ValidationError(
                f"{source}: {', '.join(sorted(aware))} carry a UTC offset and {', '.join(naive)} do not; give "
                "every time with an offset (e.g. '2026-03-02T10:00:00+01:00') or none.")
        limit = MAX_DECAY_HALF_LIVES * self.half_life_s
        for key in ("sphere", "background"):
            name = f"{key}.measured_at"
            dt = (self.scan_start - times[name]).total_seconds()
            if dt < 0:
                raise ValidationError(
                    f"{source}: field '{name}' ({times[name].isoformat()}) is {_span(-dt)} after 'scan_start' "
                    f"({self.scan_start.isoformat()}); the activity is measured before the scan. Check the "
                    "dates, times and time zones.")
            if dt > limit:
                raise ValidationError(
                    f"{source}: field '{name}' ({times[name].isoformat()}) is {_span(dt)} before 'scan_start' "
                    f"({self.scan_start.isoformat()}), more than {MAX_DECAY_HALF_LIVES:g} half-lives of "
                    f"{self.isotope}: the decay correction would multiply the activity by "
                    f"{2.0 ** (-dt / self.half_life_s):.3g}. Check the dates and times.")
            res = f"{key}.residual_measured_at"
            if res in times and abs((self.scan_start - times[res]).total_seconds()) > limit:
                raise ValidationError(f"{source}: field '{res}' ({times[res].isoformat()}) is more than "
                                      f"{MAX_DECAY_HALF_LIVES:g} half-lives from 'scan_start'; check it.")


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min"


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

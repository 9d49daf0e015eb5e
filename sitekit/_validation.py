"""Shared input checks with messages in one voice.

"The 'eb' parameter of ComBat must be a bool. Got 'yes' instead."
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable

import numpy as np

from sitekit.exceptions import ValidationError

__all__ = ["check_option", "check_bool", "check_number", "check_random_state"]


def check_option(value, options: Iterable, *, name: str, owner: str = "") -> object:
    """Return ``value`` if it is one of ``options``; else raise with a "did you mean" hint."""
    options = list(options)
    if value in options:
        return value
    where = f" of {owner}" if owner else ""
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(o) for o in options], n=1)
        if close:
            hint = f" Did you mean '{close[0]}'?"
    raise ValidationError(
        f"The '{name}' parameter{where} must be one of {options}. Got {value!r} instead.{hint}"
    )


def check_bool(value, *, name: str, owner: str = "") -> bool:
    """Return ``value`` if it is a bool (numpy bools included)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    where = f" of {owner}" if owner else ""
    raise ValidationError(f"The '{name}' parameter{where} must be a bool. Got {value!r} instead.")


def check_number(
    value,
    *,
    name: str,
    owner: str = "",
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_inclusive: bool = True,
) -> float | int:
    """Return ``value`` if it is a finite (integer) number within ``[low, high]``."""
    where = f" of {owner}" if owner else ""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise ValidationError(f"The '{name}' parameter{where} must be {what}. Got {value!r} instead.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValidationError(f"The '{name}' parameter{where} must be {op} {low}. Got {value!r} instead.")
    if high is not None and value > high:
        raise ValidationError(f"The '{name}' parameter{where} must be <= {high}. Got {value!r} instead.")
    return value


def check_random_state(random_state) -> np.random.Generator:
    """Turn ``None``, an int or a Generator into a :class:`numpy.random.Generator`.

    sitekit never uses numpy's global RNG.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise ValidationError(
        f"The 'random_state' parameter must be None, an int or a numpy Generator. Got {random_state!r} instead."
    )

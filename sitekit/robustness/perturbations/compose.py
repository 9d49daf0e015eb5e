"""Composition, named chains, replay of records and perturbation files."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._validation import check_option
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError
from sitekit.robustness.perturbations._base import (
    _REGISTRY,
    Perturbation,
    RandomPerturbation,
    _check_pair,
    _seed,
)
from sitekit.robustness.perturbations.intensity import (
    RandomCountNoise,
    RandomGaussianNoise,
    RandomIntensityScale,
)
from sitekit.robustness.perturbations.mask import (
    RandomMaskVolume,
    RandomResegment,
    RandomSupervoxelContour,
)
from sitekit.robustness.perturbations.spatial import (
    RandomGaussianBlur,
    RandomResample,
    RandomRotate,
    RandomTranslate,
)

__all__ = ['Compose', 'CHAIN_STEPS', 'get_chain', 'replay', 'perturbation_from_config', 'load_perturbations']

# --------------------------------------------------------------------------------------------
# composition, chains, replay, configuration
# --------------------------------------------------------------------------------------------
class Compose(RandomPerturbation):
    """Apply transforms in order; each random child gets its own seed.

    The seeds of the children are drawn from ``np.random.default_rng(random_state)`` when the
    chain is built, so ``Compose([...], random_state=0)`` is reproducible whatever the children's
    own ``random_state`` was.  Calling returns ``(image, mask, records)`` with one record per
    deterministic step.

    Parameters
    ----------
    transforms : sequence of Perturbation
    random_state : int, Generator or None, default=None
    """

    _param_names = ("transforms", "random_state")

    def __init__(self, transforms: Sequence[Perturbation], *, random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.transforms = transforms

    def _children(self) -> list[Perturbation]:
        if getattr(self, "_seeded", None) is None:
            if isinstance(self.transforms, Perturbation) or not isinstance(self.transforms, Sequence):
                raise ValidationError(
                    f"The 'transforms' parameter of Compose must be a list of perturbations. "
                    f"Got {self.transforms!r} instead."
                )
            rng = self._generator()
            children = []
            for t in self.transforms:
                if not isinstance(t, Perturbation):
                    raise ValidationError(
                        f"Compose got {t!r}, which is not a sitekit perturbation; use the classes "
                        "of sitekit.robustness.perturbations."
                    )
                seed = _seed(rng)
                children.append(t.clone(random_state=seed) if isinstance(t, RandomPerturbation) else t)
            self._seeded = children
        return self._seeded

    def get_params(self) -> dict[str, Any]:
        return {
            "transforms": [t.to_config() for t in self.transforms],
            "random_state": None if isinstance(self.random_state, np.random.Generator)
            else to_jsonable(self.random_state),
        }

    def clone(self, **overrides) -> Compose:
        params = {"transforms": list(self.transforms), "random_state": self.random_state}
        params.update(overrides)
        return Compose(params["transforms"], random_state=params["random_state"])

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image, list[dict]]:
        img, m = _check_pair(image, mask, "Compose")
        records: list[dict] = []
        for child in self._children():
            img, m, rec = child(img, m)
            records.extend(rec)
        return img, m, records


def _pet_chain_steps() -> dict[str, tuple[str, Callable[[], Perturbation]]]:
    return {
        "R": ("rotation about the mask centroid, -15..15 deg (z)", lambda: RandomRotate()),
        "T": ("sub-voxel translation, 0..1 voxel per axis", lambda: RandomTranslate()),
        "S": ("resampling to 2..5 mm isotropic voxels", lambda: RandomResample()),
        "B": ("Gaussian post-filter, 2..8 mm FWHM", lambda: RandomGaussianBlur()),
        "I": ("calibration error, -5..+5 %", lambda: RandomIntensityScale()),
        "N": ("additive Gaussian noise, COV 0.05..0.15", lambda: RandomGaussianNoise()),
        "P": ("count-like (Poisson) noise, COV 0.05..0.15", lambda: RandomCountNoise()),
        "G": ("re-segmentation at 40..50 % of SUVmax", lambda: RandomResegment()),
        "C": ("contour randomisation with supervoxels", lambda: RandomSupervoxelContour()),
        "V": ("volume adaptation, -20..+20 % volume", lambda: RandomMaskVolume()),
    }


#: Letter codes of :func:`get_chain` in the order they are applied, with a description.
CHAIN_STEPS: dict[str, str] = {k: v[0] for k, v in _pet_chain_steps().items()}


def get_chain(name: str, *, random_state=None) -> Compose:
    """Return a named perturbation chain (Zwanenburg et al. 2019 letter codes).

    Each letter adds one random step; the steps are applied in the fixed order of
    :data:`CHAIN_STEPS` (geometry, then resolution and intensity, then noise, then the contour),
    whatever the order of the letters.  Zwanenburg's codes: ``N`` noise, ``T`` translation,
    ``C`` contour randomisation, ``V`` volume adaptation, ``R`` rotation (e.g. ``"NTCV"``,
    ``"RNCV"``, ``"NTCVR"``); PET additions: ``P`` count noise, ``B`` post-filter, ``I``
    calibration error, ``S`` resampling, ``G`` threshold re-segmentation.

    Parameters
    ----------
    name : str
        Letter codes, case-insensitive, each at most once.
    random_state : int, Generator or None, default=None

    Returns
    -------
    Compose

    Examples
    --------
    >>> chain = get_chain("NTCV", random_state=0)
    >>> [type(t).__name__ for t in chain.transforms]
    ['RandomTranslate', 'RandomGaussianNoise', 'RandomSupervoxelContour', 'RandomMaskVolume']
    """
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(
            f"The chain name must be a non-empty string of letter codes {''.join(CHAIN_STEPS)}. "
            f"Got {name!r} instead."
        )
    letters = name.strip().upper()
    unknown = sorted(set(letters) - set(CHAIN_STEPS))
    if unknown:
        raise ValidationError(
            f"Unknown perturbation code(s) {unknown} in chain '{name}'; known codes: "
            + ", ".join(f"{k} ({v})" for k, v in CHAIN_STEPS.items())
        )
    repeated = sorted({c for c in letters if letters.count(c) > 1})
    if repeated:
        raise ValidationError(f"Chain '{name}' repeats the code(s) {repeated}; give each once.")
    steps = _pet_chain_steps()
    return Compose([steps[c][1]() for c in CHAIN_STEPS if c in letters], random_state=random_state)


def perturbation_from_config(config: Mapping | Sequence | str, *, random_state=None) -> Perturbation:
    """Build a perturbation from a configuration (as parsed from TOML/JSON).

    Accepted forms:

    * a chain name, ``"NTCV"``, or ``{"chain": "NTCV"}``;
    * a record/config ``{"name": "RandomGaussianNoise", "params": {"cov": [0.05, 0.15]}}`` or a
      flat ``{"name": "RandomGaussianNoise", "cov": [0.05, 0.15]}``;
    * a list of such entries, or ``{"perturbation": [...]}`` (TOML ``[[perturbation]]`` tables),
      which becomes a :class:`Compose`.

    ``random_state`` seeds the resulting chain (the top-level ``Compose``) unless the configuration
    itself gives ``random_state``.
    """
    if isinstance(config, str):
        return get_chain(config, random_state=random_state)
    if isinstance(config, Mapping):
        if "chain" in config:
            extra = sorted(set(config) - {"chain", "random_state"})
            if extra:
                raise ValidationError(
                    f"A perturbation file with 'chain' takes no other keys; got {extra}. Use "
                    "[[perturbation]] tables to set ranges."
                )
            return get_chain(config["chain"], random_state=config.get("random_state", random_state))
        if "perturbation" in config or "perturbations" in config:
            items = config.get("perturbation", config.get("perturbations"))
            if not isinstance(items, Sequence) or isinstance(items, str) or not items:
                raise ValidationError("'perturbation' must be a non-empty list of tables.")
            return Compose([_from_entry(e) for e in items],
                           random_state=config.get("random_state", random_state))
        return _from_entry(config)
    if isinstance(config, Sequence):
        return Compose([_from_entry(e) for e in config], random_state=random_state)
    raise ValidationError(f"Cannot build a perturbation from {config!r}.")


def _from_entry(entry) -> Perturbation:
    if isinstance(entry, Perturbation):
        return entry
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ValidationError(
            f"Each perturbation entry needs a 'name' (e.g. name = \"RandomGaussianNoise\"). "
            f"Got {entry!r} instead."
        )
    name = entry["name"]
    check_option(name, sorted(_REGISTRY), name="name", owner="a perturbation entry")
    params = dict(entry["params"]) if "params" in entry else {k: v for k, v in entry.items() if k != "name"}
    cls = _REGISTRY[name]
    if cls is Compose:
        return Compose([_from_entry(e) for e in params.get("transforms", [])],
                       random_state=params.get("random_state"))
    allowed = set(cls._param_names)
    if "seed" in params and "random_state" in allowed and "random_state" not in params:
        # records written by sitekit 0.1 name the noise seed 'seed': they still replay
        params["random_state"] = params.pop("seed")
    bad = sorted(set(params) - allowed)
    if bad:
        raise ValidationError(
            f"{name} has no parameter(s) {bad}; its parameters are {sorted(allowed)}."
        )
    return cls(**params)


def replay(records: Sequence[Mapping], image: sitk.Image,
           mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Re-apply recorded deterministic steps exactly.

    Parameters
    ----------
    records : list of dict
        The records returned by a perturbation call (``[{"name": ..., "params": {...}}, ...]``),
        possibly after a JSON round trip (records of sitekit 0.1, whose noise steps name their
        seed ``seed`` instead of ``random_state``, replay too).
    image, mask : SimpleITK.Image

    Returns
    -------
    image, mask : SimpleITK.Image
        Identical to the pair the recorded run produced.
    """
    if isinstance(records, Mapping):
        records = [records]
    img, m = _check_pair(image, mask, "replay")
    for rec in records:
        step = _from_entry(rec)
        if isinstance(step, RandomPerturbation):
            raise ValidationError(
                f"replay() takes records of deterministic steps; '{rec.get('name')}' is random. "
                "Use the records a perturbation call returned."
            )
        img, m, _ = step(img, m)
    return img, m


def load_perturbations(path: PathLike, *, random_state=None) -> Perturbation:
    """Read a perturbation TOML file and build the perturbation it describes.

    The file holds either a named chain::

        chain = "NTCV"

    or a list of steps, applied in the order given (each ``name`` is a class of this module,
    the other keys its parameters; ranges as two-element lists)::

        [[perturbation]]
        name = "RandomGaussianNoise"
        cov = [0.05, 0.15]

        [[perturbation]]
        name = "RandomMaskVolume"
        fraction = [-0.2, 0.2]

    An optional top-level ``random_state`` seeds the chain; otherwise ``random_state`` does.

    Raises
    ------
    MissingFileError
        The file does not exist.
    CorruptFileError
        The file is not valid TOML.
    ValidationError
        Unknown chain codes, class names or parameters.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(
            f"Perturbation file '{p}' does not exist; write a TOML file with chain = \"NTCV\" or "
            "[[perturbation]] tables (see the robustness user guide)."
        )
    try:
        config = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Perturbation file '{p}' is not valid TOML: {exc}") from exc
    if not config:
        raise ValidationError(
            f"Perturbation file '{p}' is empty; give chain = \"NTCV\" or [[perturbation]] tables."
        )
    try:
        return perturbation_from_config(config, random_state=random_state)
    except ValidationError as exc:
        raise ValidationError(f"Perturbation file '{p}': {exc}") from exc


"""Query-only adversarial attacks on segmentation models: 3-D Square attack and SimBA."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sitekit._validation import check_number, check_option, check_random_state
from sitekit.exceptions import ValidationError
from sitekit.robustness.models._base import check_image, image_like
from sitekit.robustness.segmentation._metrics import check_same_grid, mask_array

__all__ = ["AttackResult", "segmentation_attack", "replay_attack", "background_sd"]

_METHODS = ("square", "simba")
_TARGETS = ("reference", "clean")
#: Square-attack schedule (Andriushchenko et al. 2020): the window fraction halves at these
#: fractions of the query budget (their iterations out of 10 000).
_SCHEDULE = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def background_sd(image: sitk.Image, mask: sitk.Image, *, margin_mm: float = 10.0) -> float:
    """Standard deviation of the image outside the lesion (mask grown by ``margin_mm``).

    The scanner's own voxel noise (plus background texture), in image units, against which
    an attack budget is compared.

    Parameters
    ----------
    image : SimpleITK.Image
    mask : SimpleITK.Image
    margin_mm : float, default=10.0

    Returns
    -------
    float
        NaN when no finite voxel lies outside the grown mask.
    """
    a = sitk.GetArrayFromImage(image).astype(np.float64)
    m = mask_array(mask)
    sp = np.array(image.GetSpacing())[::-1]
    if m.any():
        far = ndimage.distance_transform_edt(~m, sampling=sp) > margin_mm
    else:
        far = np.ones(m.shape, bool)
    vals = a[far & np.isfinite(a)]
    return float(vals.std(ddof=1)) if vals.size > 1 else math.nan


@dataclass
class AttackResult:
    """Outcome of :func:`segmentation_attack`.

    Attributes
    ----------
    method : str
    epsilon : float
        The L_inf budget (image units).
    dice_clean : float
        Dice of the clean prediction against the target.
    dice_attacked : float
        Dice of the prediction on ``image + perturbation``.
    dice_random : float
        Mean Dice under random +-epsilon sign noise (``n_random`` draws) at the same budget.
    queries : int
        Model queries used (the clean query included).
    perturbation : SimpleITK.Image
        The perturbation (float32, on the image grid); add it to the image to replay.
    linf : float
        Its largest absolute value (never above ``epsilon``).
    background_sd : float
        The image's background SD (see :func:`background_sd`), to compare with ``epsilon``.
    random_state : int
        The seed that replays the attack (:func:`replay_attack`).
    history : list of (int, float)
        ``(queries, dice)`` after every accepted step.
    params : dict
        The call's parameters.
    """

    method: str
    epsilon: float
    dice_clean: float
    dice_attacked: float
    dice_random: float
    queries: int
    perturbation: sitk.Image
    linf: float
    background_sd: float
    random_state: int
    history: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def dice_drop(self) -> float:
        """``dice_clean - dice_attacked``."""
        return self.dice_clean - self.dice_attacked

    def to_dict(self) -> dict:
        """JSON-ready summary (without the perturbation image)."""
        return {
            "method": self.method, "epsilon": self.epsilon, "dice_clean": self.dice_clean,
            "dice_attacked": self.dice_attacked, "dice_random": self.dice_random,
            "dice_drop": self.dice_drop, "queries": self.queries, "linf": self.linf,
            "background_sd": self.background_sd,
            "epsilon_over_background_sd": (self.epsilon / self.background_sd
                                           if self.background_sd and np.isfinite(self.background_sd)
                                           else math.nan),
            "random_state": self.random_state, "params": self.params,
        }


class _Oracle:
    """Counts queries; returns the predicted mask of ``base + delta``."""

    def __init__(self, model, image: sitk.Image) -> None:
        self.model, self.image, self.queries = model, image, 0
        self.base = sitk.GetArrayFromImage(image)

    def __call__(self, delta: np.ndarray) -> np.ndarray:
        self.queries += 1
        pert = image_like(self.base + delta.astype(np.float32), self.image)
        self.last = mask_array(self.model.predict(pert))
        return self.last


def _search_box(target: np.ndarray, clean: np.ndarray, spacing_zyx, margin_mm: float) -> tuple[slice, ...]:
    both = target | clean
    if not both.any():
        return tuple(slice(0, n) for n in target.shape)
    idx = np.nonzero(both)
    grow = [int(math.ceil(margin_mm / s)) for s in spacing_zyx]
    return tuple(slice(max(0, int(i.min()) - g), min(n, int(i.max()) + g + 1))
                 for i, g, n in zip(idx, grow, target.shape))


def _band(target: np.ndarray, pred: np.ndarray, box) -> np.ndarray:
    """Indices (in the box) of voxels next to the surface of the target or of the prediction."""
    t, p = target[box], pred[box]
    edge = (ndimage.binary_dilation(t) & ~ndimage.binary_erosion(t)) | (
        ndimage.binary_dilation(p) & ~ndimage.binary_erosion(p))
    return np.argwhere(edge)


def _square(oracle, target, box, eps, max_queries, rng, history):
    shape = target.shape
    delta = np.zeros(shape, np.float32)
    sub = tuple(s.stop - s.start for s in box)
    # initialisation: vertical stripes of random sign inside the search box (as in the paper)
    stripes = rng.choice([-eps, eps], size=(1, 1, sub[2])).astype(np.float32)
    delta[box] = np.broadcast_to(stripes, sub)
    pred = oracle(delta)
    best = _dice(pred, target)
    history.append((oracle.queries, best))
    band = _band(target, pred, box)
    volume = float(np.prod(sub))
    p_init = 0.1
    it = 0
    while oracle.queries < max_queries and best > 0.0:
        frac = it / max(1, max_queries)
        p = p_init / (2 ** sum(frac > t for t in _SCHEDULE))
        side = [min(n, max(1, int(round((p * volume) ** (1.0 / 3.0))))) for n in sub]
        if len(band) and rng.random() < 0.8:
            # centre the window on the surface band of the target or of the current prediction
            c = band[int(rng.integers(0, len(band)))]
            corner = [int(np.clip(ci - s // 2, 0, n - s)) for ci, s, n in zip(c, side, sub)]
        else:
            corner = [int(rng.integers(0, n - s + 1)) for n, s in zip(sub, side)]
        win = tuple(slice(b.start + c, b.start + c + s) for b, c, s in zip(box, corner, side))
        sign = eps if rng.random() < 0.5 else -eps
        if np.all(delta[win] == sign):
            sign = -sign
        old = delta[win].copy()
        delta[win] = sign
        new = oracle(delta)
        d = _dice(new, target)
        if d < best:
            best, pred = d, new
            band = _band(target, pred, box)
            history.append((oracle.queries, best))
        else:
            delta[win] = old
        it += 1
    return delta, best


def _simba(oracle, target, box, eps, max_queries, rng, history):
    delta = np.zeros(target.shape, np.float32)
    best = _dice(oracle(delta), target)
    history.append((oracle.queries, best))
    # voxels next to the surface of the target or of the clean prediction first, then the rest
    # of the box, each group in random order
    pred = oracle.last
    near = np.zeros(tuple(s.stop - s.start for s in box), bool)
    band = _band(target, pred, box)
    near[tuple(band.T)] = True
    offset = np.array([s.start for s in box])
    coords = np.concatenate([rng.permutation(np.argwhere(near)), rng.permutation(np.argwhere(~near))]) + offset
    for k in range(len(coords)):
        if oracle.queries >= max_queries or best <= 0.0:
            break
        z, y, x = coords[k]
        first = eps if rng.random() < 0.5 else -eps
        for step in (first, -first):
            if oracle.queries >= max_queries:
                break
            delta[z, y, x] = step
            d = _dice(oracle(delta), target)
            if d < best:
                best = d
                history.append((oracle.queries, best))
                break
            delta[z, y, x] = 0.0
    return delta, best


def segmentation_attack(
    model,
    image: sitk.Image,
    reference: sitk.Image | None = None,
    *,
    epsilon: float,
    max_queries: int = 1000,
    method: str = "square",
    target: str = "reference",
    margin_mm: float = 10.0,
    n_random: int = 5,
    random_state=None,
):
    """Query-only L_inf attack that lowers a segmenter's Dice.

    Only ``model.predict`` is called.  The loss is the Dice of the prediction on
    ``image + delta`` against the target mask (the reference, or the clean prediction with
    ``target="clean"``); ``|delta| <= epsilon`` everywhere.  Perturbations are placed in the
    box around the target and the clean prediction grown by ``margin_mm`` (where the loss can
    change).

    - ``"square"``: a 3-D Square attack (Andriushchenko et al. 2020): start from stripes of
      random +-epsilon, then propose random cubes set to +-epsilon, keep a proposal when the
      Dice drops; the cube volume starts at 10 % of the box and halves on the paper's schedule.
    - ``"simba"``: SimBA in the voxel basis (Guo et al. 2019): voxels in random order, try
      +epsilon or -epsilon, keep what lowers the Dice (up to two queries per voxel).

    The result always carries the Dice under random +-epsilon sign noise at the same budget
    (same box) and the image's background SD, so an attack's effect can be told from noise.

    Parameters
    ----------
    model : object with ``predict(image) -> mask``
    image : SimpleITK.Image
        3-D PET image (SUV).
    reference : SimpleITK.Image, optional
        Reference mask on the image grid; needed for ``target="reference"``.
    epsilon : float
        L_inf budget in image units (SUV), > 0.
    max_queries : int, default=1000
        Model queries allowed, the clean query included.
    method : {"square", "simba"}, default="square"
    target : {"reference", "clean"}, default="reference"
    margin_mm : float, default=10.0
    n_random : int, default=5
        Draws of random sign noise for ``dice_random``.
    random_state : int, Generator or None
        Seed; the result's ``random_state`` replays the attack exactly.

    Returns
    -------
    AttackResult

    Raises
    ------
    ValidationError
        A bad budget, method or target, or a reference on another grid.

    Examples
    --------
    >>> import numpy as np, SimpleITK as sitk
    >>> from sitekit.robustness.models import FixedThresholdSegmenter
    >>> a = np.ones((12, 12, 12), np.float32); a[4:8, 4:8, 4:8] = 2.6
    >>> img = sitk.GetImageFromArray(a)
    >>> res = segmentation_attack(FixedThresholdSegmenter(2.5), img, target="clean",
    ...                           epsilon=0.2, max_queries=200, random_state=0)
    >>> res.dice_clean, res.dice_attacked < 0.5, res.linf <= 0.2
    (1.0, True, True)
    """
    owner = "segmentation_attack"
    img = check_image(image, owner=owner)
    eps = float(check_number(epsilon, name="epsilon", owner=owner, low=0, low_inclusive=False))
    # the perturbation is float32: use the largest float32 not above epsilon (0.3 would round up)
    eps32 = np.float32(eps)
    if float(eps32) > eps:
        eps32 = np.nextafter(eps32, np.float32(0))
    max_queries = int(check_number(max_queries, name="max_queries", owner=owner, integer=True, low=2))
    method = check_option(method, _METHODS, name="method", owner=owner)
    target = check_option(target, _TARGETS, name="target", owner=owner)
    check_number(margin_mm, name="margin_mm", owner=owner, low=0)
    n_random = int(check_number(n_random, name="n_random", owner=owner, integer=True, low=0))
    if target == "reference":
        if reference is None:
            raise ValidationError("segmentation_attack with target='reference' needs a 'reference' mask; "
                                  "pass one or use target='clean'.")
        check_same_grid(img, reference, names=("image", "reference"))
    if isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**31 - 1))
    elif random_state is None:
        seed = int(np.random.default_rng().integers(0, 2**31 - 1))
    else:
        check_random_state(random_state)  # validates the type
        seed = int(random_state)
    rng = np.random.default_rng(seed)
    oracle = _Oracle(model, img)
    clean = oracle(np.zeros(oracle.base.shape, np.float32))
    tgt = mask_array(reference) if target == "reference" else clean
    dice_clean = _dice(clean, tgt)
    spacing_zyx = tuple(reversed(img.GetSpacing()))
    box = _search_box(tgt, clean, spacing_zyx, float(margin_mm))
    history: list = [(oracle.queries, dice_clean)]
    attack = _square if method == "square" else _simba
    delta, best = attack(oracle, tgt, box, eps32, max_queries, rng, history)
    if best > dice_clean:  # the initial step may be worse than no perturbation at all
        delta[...] = 0.0
        best = dice_clean
    delta = np.clip(delta, -eps32, eps32)
    # random +-epsilon noise at the same budget, in the same box (extra queries, not counted)
    noise_rng = np.random.default_rng([seed, 1])
    rand = []
    for _ in range(n_random):
        noise = np.zeros(delta.shape, np.float32)
        noise[box] = noise_rng.choice(np.array([-eps32, eps32], np.float32), size=noise[box].shape)
        pert = image_like(oracle.base + noise, img)
        rand.append(_dice(mask_array(model.predict(pert)), tgt))
    ref_for_bg = reference if reference is not None else image_like(clean.astype(np.uint8), img, np.uint8)
    return AttackResult(
        method=method, epsilon=eps, dice_clean=float(dice_clean), dice_attacked=float(best),
        dice_random=float(np.mean(rand)) if rand else math.nan, queries=int(oracle.queries),
        perturbation=image_like(delta, img), linf=float(np.abs(delta).max()) if delta.size else 0.0,
        background_sd=background_sd(img, ref_for_bg), random_state=seed, history=history,
        params={"epsilon": eps, "max_queries": max_queries, "method": method, "target": target,
                "margin_mm": float(margin_mm), "n_random": n_random},
    )


def replay_attack(model, image: sitk.Image, reference: sitk.Image | None, result: AttackResult) -> AttackResult:
    """Run the attack of ``result`` again from its seed (gives the same perturbation).

    Parameters
    ----------
    model : object with ``predict``
    image : SimpleITK.Image
    reference : SimpleITK.Image or None
    result : AttackResult

    Returns
    -------
    AttackResult
    """
    return segmentation_attack(model, image, reference, random_state=result.random_state, **result.params)

"""White-box PGD on the soft Dice loss, for torch models (optional extra ``sitekit[torch]``)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from sitekit._validation import check_number, check_option, check_random_state
from sitekit.exceptions import ValidationError
from sitekit.robustness.models._base import check_image, image_like
from sitekit.robustness.models._torch import TorchSegmenter, _torch
from sitekit.robustness.segmentation._attack import AttackResult, _dice, background_sd
from sitekit.robustness.segmentation._metrics import check_same_grid, mask_array

__all__ = ["pgd_attack"]


def pgd_attack(
    model: TorchSegmenter,
    image: sitk.Image,
    reference: sitk.Image | None = None,
    *,
    epsilon: float,
    n_steps: int = 20,
    step_size: float | None = None,
    target: str = "reference",
    n_random: int = 5,
    random_state=None,
) -> AttackResult:
    """Projected gradient descent (white box) that lowers the soft Dice of a torch segmenter.

    Starts from uniform noise in [-epsilon, epsilon], takes ``n_steps`` signed-gradient steps
    on the soft Dice of the probability map against the target and projects back onto the
    L_inf ball after each step.  Compare with :func:`segmentation_attack` (query-only) on the
    same budget: the gap shows how much a black-box evaluator misses.

    Parameters
    ----------
    model : TorchSegmenter
    image : SimpleITK.Image
    reference : SimpleITK.Image, optional
        Needed for ``target="reference"``.
    epsilon : float
        L_inf budget (image units).
    n_steps : int, default=20
    step_size : float, optional
        Default ``2.5 * epsilon / n_steps``.
    target : {"reference", "clean"}, default="reference"
    n_random : int, default=5
        Draws of random +-epsilon noise for ``dice_random``.
    random_state : int or None

    Returns
    -------
    AttackResult
        ``queries`` counts forward-backward passes (plus the clean prediction).
    """
    torch = _torch()
    if not isinstance(model, TorchSegmenter):
        raise ValidationError(f"pgd_attack needs a TorchSegmenter. Got {type(model).__name__}; use "
                              "segmentation_attack for query-only models.")
    img = check_image(image, owner="pgd_attack")
    eps = float(check_number(epsilon, name="epsilon", owner="pgd_attack", low=0, low_inclusive=False))
    eps32 = np.float32(eps)
    if float(eps32) > eps:
        eps32 = np.nextafter(eps32, np.float32(0))
    n_steps = int(check_number(n_steps, name="n_steps", owner="pgd_attack", integer=True, low=1))
    alpha = float(step_size) if step_size is not None else 2.5 * eps / n_steps
    target = check_option(target, ("reference", "clean"), name="target", owner="pgd_attack")
    if target == "reference":
        if reference is None:
            raise ValidationError("pgd_attack with target='reference' needs a 'reference' mask.")
        check_same_grid(img, reference, names=("image", "reference"))
    check_random_state(random_state)
    seed = int(random_state) if random_state is not None else int(np.random.default_rng().integers(0, 2**31 - 1))
    base = sitk.GetArrayFromImage(img)
    clean = mask_array(model.predict(img))
    tgt = mask_array(reference) if target == "reference" else clean
    x = torch.from_numpy(base)[None, None]
    y = torch.from_numpy(tgt.astype(np.float32))[None, None]
    gen = torch.Generator().manual_seed(seed)
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * float(eps32)
    for _ in range(n_steps):
        delta.requires_grad_(True)
        out = model.module(x + delta)
        if model.output == "logits":
            out = torch.sigmoid(out)
        soft = (2 * (out * y).sum() + 1) / (out.sum() + y.sum() + 1)
        grad, = torch.autograd.grad(soft, delta)
        with torch.no_grad():
            delta = (delta - alpha * grad.sign()).clamp(-float(eps32), float(eps32))
    d = np.clip(delta.detach().numpy()[0, 0].astype(np.float32), -eps32, eps32)
    attacked = mask_array(model.predict(image_like(base + d, img)))
    rng = np.random.default_rng([seed, 1])
    rand = [_dice(mask_array(model.predict(image_like(
        base + rng.choice(np.array([-eps32, eps32], np.float32), size=base.shape), img))), tgt)
        for _ in range(n_random)]
    ref_for_bg = reference if reference is not None else image_like(clean.astype(np.uint8), img, np.uint8)
    return AttackResult(
        method="pgd", epsilon=eps, dice_clean=_dice(clean, tgt), dice_attacked=_dice(attacked, tgt),
        dice_random=float(np.mean(rand)) if rand else float("nan"), queries=n_steps + 1,
        perturbation=image_like(d, img), linf=float(np.abs(d).max()), background_sd=background_sd(img, ref_for_bg),
        random_state=seed, params={"epsilon": eps, "n_steps": n_steps, "step_size": alpha, "target": target,
                                   "n_random": n_random})

"""ONNX segmentation models through onnxruntime (CPU)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit._validation import check_number, check_option
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError
from sitekit.robustness.models._base import (
    check_image,
    image_like,
    mask_like,
    resample_onto,
    resample_to_spacing,
)

__all__ = ["OnnxSegmenter", "gaussian_importance", "window_starts"]

_OUTPUT_KINDS = ("probability", "logits")


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of sliding windows of length ``patch`` covering ``size`` voxels.

    The step is ``max(1, floor(patch * (1 - overlap)))``; the last window ends at the edge.
    """
    if size <= patch:
        return [0]
    step = max(1, int(math.floor(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def gaussian_importance(patch_zyx: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian weight map over a patch (sigma = ``sigma_scale`` x the patch edge), max 1, floor 1e-6."""
    axes = []
    for n in patch_zyx:
        c = (n - 1) / 2.0
        s = max(sigma_scale * n, 1e-6)
        axes.append(np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-6)


def _normaliser(spec, owner: str):
    """Return ``f(array) -> array`` from a normalisation spec."""
    if spec is None or spec == "none":
        return lambda a: a
    if spec == "zscore":
        def zscore(a):
            sd = float(a.std())
            return (a - float(a.mean())) / (sd if sd > 0 else 1.0)
        return zscore
    if isinstance(spec, Mapping) and spec.get("kind") == "scale":
        offset = float(check_number(spec.get("offset", 0.0), name="normalise offset", owner=owner))
        scale = float(check_number(spec.get("scale", 1.0), name="normalise scale", owner=owner))
        return lambda a: (a - offset) * scale
    raise ValidationError(
        f"The 'normalise' parameter of {owner} must be None, 'none', 'zscore' or "
        f"{{'kind': 'scale', 'offset': o, 'scale': s}} (input = (SUV - o) * s). Got {spec!r} instead."
    )


class OnnxSegmenter:
    """A segmentation network in an ONNX file, run with onnxruntime on the CPU.

    The network takes a float32 tensor of shape ``(1, 1, z, y, x)`` and returns one of the
    same shape: a probability (or logits, turned into probabilities with a sigmoid).  The
    adapter resamples the image to the model's voxel spacing, normalises it, runs the network
    on the whole volume or in overlapping patches blended with Gaussian weights, resamples the
    probability map back onto the input grid (linear) and thresholds it.

    Settings not given here are read from a model card, a JSON file beside the model
    (``model.onnx`` -> ``model.json``) with the keys ``spacing``, ``patch_size``,
    ``normalise``, ``threshold`` and ``output: {"kind": ...}``; constructor arguments win.

    Parameters
    ----------
    path : str or path-like
        The ``.onnx`` file.
    spacing : sequence of 3 float, optional
        Voxel spacing (x, y, z mm) the model expects; None = run on the image's own grid.
    patch_size : sequence of 3 int, optional
        Window size in voxels (x, y, z) for sliding-window inference; None = the whole volume
        in one run (or the model's fixed input size when its spatial axes are fixed).
        Volumes smaller than a patch are padded with their edge values.
    overlap : float in [0, 1), default=0.25
        Fraction of a patch shared by neighbouring windows.
    threshold : float, optional
        Probability at or above which a voxel is lesion; default 0.5 (or the model card's).
    normalise : None, "none", "zscore" or dict, optional
        Intensity normalisation before the network: ``{"kind": "scale", "offset": o,
        "scale": s}`` gives ``(SUV - o) * s``; ``"zscore"`` uses the volume's mean and SD.
        None = the model card's, else no normalisation.
    output : {"probability", "logits"}, optional
        What the network returns; default the model card's, else ``"probability"``.

    Attributes
    ----------
    card_ : dict
        The model card read beside the file (empty when there is none).
    input_name_ : str
        Name of the network's input.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CorruptFileError
        The file is not a readable ONNX model, or its model card is not valid JSON.
    ValidationError
        The network's input is not of rank 5 with one channel, or a setting is invalid.

    Examples
    --------
    >>> from sitekit.datasets import sample_data_dir
    >>> from sitekit.robustness.models import OnnxSegmenter
    >>> model = OnnxSegmenter(sample_data_dir() / "models" / "unet_pet.onnx")
    >>> model.spacing
    (2.0, 2.0, 2.0)
    """

    def __init__(
        self,
        path: PathLike,
        *,
        spacing: Sequence[float] | None = None,
        patch_size: Sequence[int] | None = None,
        overlap: float = 0.25,
        threshold: float | None = None,
        normalise=None,
        output: str | None = None,
    ) -> None:
        owner = "OnnxSegmenter"
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"ONNX model file '{self.path}' does not exist; check the path.")
        self.card_ = self._read_card()
        card = self.card_
        sp = spacing if spacing is not None else card.get("spacing")
        self.spacing = None if sp is None else tuple(
            float(check_number(s, name="spacing", owner=owner, low=0, low_inclusive=False)) for s in sp)
        if self.spacing is not None and len(self.spacing) != 3:
            raise ValidationError(f"The 'spacing' parameter of {owner} needs 3 values (x, y, z mm). Got {sp!r}.")
        ps = patch_size if patch_size is not None else card.get("patch_size")
        self.patch_size = None if ps is None else tuple(
            int(check_number(p, name="patch_size", owner=owner, integer=True, low=1)) for p in ps)
        if self.patch_size is not None and len(self.patch_size) != 3:
            raise ValidationError(f"The 'patch_size' parameter of {owner} needs 3 values (x, y, z). Got {ps!r}.")
        self.overlap = float(check_number(overlap, name="overlap", owner=owner, low=0, high=0.95))
        th = threshold if threshold is not None else card.get("threshold", 0.5)
        self.threshold = float(check_number(th, name="threshold", owner=owner))
        self.normalise = normalise if normalise is not None else card.get("normalise")
        self._normalise = _normaliser(self.normalise, owner)
        out = output if output is not None else card.get("output", {}).get("kind", "probability")
        self.output = check_option(out, _OUTPUT_KINDS, name="output", owner=owner)
        self._session = None
        self._open()

    # ---------------------------------------------------------------- loading
    def _read_card(self) -> dict:
        card_path = self.path.with_suffix(".json")
        if not card_path.is_file():
            return {}
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(
                f"Model card '{card_path}' is not valid JSON ({exc}); fix or remove it."
            ) from exc
        if not isinstance(card, dict):
            raise CorruptFileError(f"Model card '{card_path}' must hold a JSON object; fix or remove it.")
        return card

    def _open(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptFileError(
                f"'{self.path}' is not a readable ONNX model ({first}); export the network with "
                "torch.onnx.export or onnx.save."
            ) from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ValidationError(
                f"ONNX model '{self.path}' has {len(inputs)} inputs; OnnxSegmenter needs exactly one "
                "(a (1, 1, z, y, x) image)."
            )
        shape = inputs[0].shape
        if len(shape) != 5 or (isinstance(shape[1], int) and shape[1] != 1):
            raise ValidationError(
                f"ONNX model '{self.path}' takes input '{inputs[0].name}' of shape {shape}; OnnxSegmenter "
                "needs rank 5 (batch, channel=1, z, y, x). Wrap 2-D or multi-channel networks in a "
                "CallableSegmenter."
            )
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[2:]]
        if self.patch_size is None and all(d is not None for d in fixed):
            self.patch_size = tuple(reversed(fixed))  # (x, y, z)
        self.input_name_ = inputs[0].name
        self._session = session

    def __getstate__(self) -> dict:
        # The onnxruntime session cannot travel to Dask workers; each process reopens the file.
        state = self.__dict__.copy()
        state["_session"] = None
        state["_normalise"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._normalise = _normaliser(self.normalise, "OnnxSegmenter")
        self._open()

    def __repr__(self) -> str:
        return (f"OnnxSegmenter('{self.path}', spacing={self.spacing}, patch_size={self.patch_size}, "
                f"overlap={self.overlap}, threshold={self.threshold}, normalise={self.normalise!r})")

    # ---------------------------------------------------------------- inference
    def run_array(self, array: np.ndarray) -> np.ndarray:
        """Probability map of a normalised (z, y, x) array on the model grid (no resampling).

        Whole volume in one run when ``patch_size`` is None; else Gaussian-weighted sliding
        windows (volumes smaller than a patch are padded with edge values and cropped back).
        """
        a = np.asarray(array, np.float32)
        if self.patch_size is None:
            return self._infer(a)
        patch = tuple(reversed(self.patch_size))  # z, y, x
        pad = [(0, max(0, p - s)) for p, s in zip(patch, a.shape)]
        padded = np.pad(a, pad, mode="edge") if any(p[1] for p in pad) else a
        acc = np.zeros(padded.shape, np.float64)
        wsum = np.zeros(padded.shape, np.float64)
        weight = gaussian_importance(patch)
        for z in window_starts(padded.shape[0], patch[0], self.overlap):
            for y in window_starts(padded.shape[1], patch[1], self.overlap):
                for x in window_starts(padded.shape[2], patch[2], self.overlap):
                    sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                    acc[sl] += weight * self._infer(padded[sl])
                    wsum[sl] += weight
        prob = acc / wsum
        return prob[: a.shape[0], : a.shape[1], : a.shape[2]].astype(np.float32)

    def _infer(self, a: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self.input_name_: a[None, None]})[0]
        out = np.asarray(out, np.float32).reshape(out.shape[-3:])
        if out.shape != a.shape:
            raise ValidationError(
                f"ONNX model '{self.path}' returned shape {out.shape} for an input of shape {a.shape}; "
                "OnnxSegmenter needs a same-size output (set patch_size to a size the network accepts)."
            )
        if self.output == "logits":
            out = 1.0 / (1.0 + np.exp(-out))
        return out

    def predict_proba(self, image: sitk.Image) -> sitk.Image:
        """Lesion probability (float32) on the grid of ``image``.

        Parameters
        ----------
        image : SimpleITK.Image
            3-D PET image in SUV.

        Returns
        -------
        SimpleITK.Image
            Float32 probabilities in [0, 1] on the input grid.
        """
        img = check_image(image, owner="OnnxSegmenter")
        work = img
        if self.spacing is not None and not np.allclose(img.GetSpacing(), self.spacing, rtol=0, atol=1e-6):
            work = resample_to_spacing(img, self.spacing)
        arr = self._normalise(sitk.GetArrayFromImage(work).astype(np.float32))
        prob = image_like(self.run_array(arr), work)
        if work is not img:
            prob = resample_onto(prob, img)
        return prob

    def predict(self, image: sitk.Image) -> sitk.Image:
        """Binary lesion mask (uint8 0/1) on the grid of ``image``: probability >= ``threshold``.

        Parameters
        ----------
        image : SimpleITK.Image
            3-D PET image in SUV.

        Returns
        -------
        SimpleITK.Image
        """
        prob = self.predict_proba(image)
        return mask_like(sitk.GetArrayViewFromImage(prob) >= self.threshold, prob)

"""Type aliases of the public surface."""

from __future__ import annotations

import os
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

PathLike: TypeAlias = str | os.PathLike[str]
ArrayLike: TypeAlias = npt.ArrayLike
FloatArray: TypeAlias = npt.NDArray[np.float64]
Standard: TypeAlias = Literal["EARL1", "EARL2"]
RandomState: TypeAlias = int | np.random.Generator | None

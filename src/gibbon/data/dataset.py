"""The one data container every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Dataset:
    """A labelled split of image-shaped data, ready for a model.

    Attributes:
        name: dataset name as passed to :func:`gibbon.data.load` (e.g. ``"mnist"``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        x: float32 inputs, shape ``(N, C, H, W)``, inside ``bounds`` (``[0, 1]`` for the
            built-in datasets).
        y: int64 labels, shape ``(N,)``, in ``range(len(classes))``.
        classes: class names, index = label.
        bounds: ``(low, high)`` of valid inputs.
        source: where the arrays came from (a path or package), for the model card and reports.
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    bounds: tuple[float, float] = (0.0, 1.0)
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``(C, H, W)``."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

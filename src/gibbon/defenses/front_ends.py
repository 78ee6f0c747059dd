"""Input transformations by name, for the command line: ``--transform bit-depth:bits=1``.

Names: ``bit-depth`` (:class:`~gibbon.defenses.transforms.BitDepthReduction`), ``median``
(:class:`~gibbon.defenses.transforms.MedianSmoothing`), ``jpeg``
(:class:`~gibbon.defenses.transforms.JpegCompression`), ``resize-pad``
(:class:`~gibbon.defenses.transforms.RandomResizePad`). Options are the classes' keyword
arguments.
"""

from __future__ import annotations

import inspect

from gibbon.core.specs import parse_options, split_spec
from gibbon.defenses.transforms import (BitDepthReduction, InputTransformed, JpegCompression, MedianSmoothing,
                                        RandomResizePad)

TRANSFORMS = {"bit-depth": BitDepthReduction, "median": MedianSmoothing, "jpeg": JpegCompression,
              "resize-pad": RandomResizePad}


def parse_transform(spec: str, model=None):
    """``"NAME:key=value,..."`` -> the transform, or ``InputTransformed(transform, model)`` when a model is given.

    Example:
        >>> parse_transform("bit-depth:bits=3").bits
        3
    """
    name, rest = split_spec(spec, TRANSFORMS, "transform")
    cls = TRANSFORMS[name]
    defaults = {p.name: (None if p.default is inspect.Parameter.empty else p.default)
                for p in inspect.signature(cls).parameters.values() if p.name != "bounds"}
    kwargs = parse_options(rest, defaults, kind="transform", name=name)
    transform = cls(**kwargs)
    return transform if model is None else InputTransformed(transform, model)

"""Defenses: training objectives that harden a model, plugged into :func:`gibbon.zoo.fit`.

    >>> from gibbon import zoo
    >>> from gibbon.defenses import fast_objective
    >>> zoo.fit(model, train, epochs=10, batch_size=100, lr=5e-3, schedule="cyclic",
    ...         objective=fast_objective(0.3, step_size=0.375))  # doctest: +SKIP
"""

from gibbon.defenses.fast import MNIST_RECIPE, fast_objective

__all__ = ["fast_objective", "MNIST_RECIPE"]

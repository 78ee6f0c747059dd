"""Model zoo: literature architectures by name, a seeded resumable trainer, safetensors
save/load with JSON model cards, and a cache of trained models.

    >>> from gibbon import zoo
    >>> model = zoo.build("madry-cnn", "mnist")
    >>> zoo.fit(model, train, epochs=2, val=val)  # doctest: +SKIP
    >>> zoo.save(model, "runs/madry.safetensors", {"dataset": "mnist", "seed": 0})  # doctest: +SKIP
    >>> model = zoo.load(zoo.trained("mlp-200-200", "digits", epochs=5))  # doctest: +SKIP
"""

from gibbon.zoo.architectures import ARCHITECTURES, build
from gibbon.zoo.cache import list_cached, trained
from gibbon.zoo.foreign import load_onnx_torch, load_timm, load_torchvision, normalize
from gibbon.zoo.io import load, load_user_model, save
from gibbon.zoo.training import FitResult, accuracy, fit, recalibrate_batch_norm

__all__ = [
    "ARCHITECTURES", "build", "fit", "FitResult", "accuracy", "recalibrate_batch_norm",
    "save", "load", "load_user_model", "trained", "list_cached",
    "load_onnx_torch", "load_torchvision", "load_timm", "normalize",
]

"""Saving and loading models: safetensors weights plus a JSON model card beside them.

``save(model, "runs/m.safetensors", card)`` writes ``runs/m.safetensors`` (the state dict) and
``runs/m.json`` (the card). :func:`load` rebuilds the architecture named in the card with
:func:`gibbon.zoo.build` and loads the weights strictly. Nothing is ever unpickled.

Card fields (always present after :func:`save`; extra keys are kept):

* ``architecture`` -- a :data:`gibbon.zoo.ARCHITECTURES` name (None for a user model, which then
  needs ``factory``: ``"pkg.module:function"``); ``arch_kwargs`` -- options passed to ``build``
* ``dataset``, ``input_shape`` ``[C, H, W]``, ``num_classes``, ``classes`` (names), ``bounds``
* ``normalization`` -- None, or ``{"mean": [...], "std": [...]}`` per channel: the model
  expects inputs in ``bounds`` and normalises internally (see :class:`Normalized`)
* ``wrappers`` -- list of wrappers (temperature, defenses, ...) applied on top of the saved
  weights; :func:`load` returns the bare model and leaves re-applying them to their owners
* ``seed``, ``epochs``, ``clean_test_accuracy``
* ``versions`` -- ``{"gibbon", "torch", "numpy", "python"}`` at save time
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo.architectures import ARCHITECTURES, build

CARD_FORMAT = "gibbon-model-card/1"
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def gibbon_version() -> str:
    try:
        from gibbon._version import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        return version("gibbon")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        return "0.1.0"


def versions() -> dict:
    return {
        "gibbon": gibbon_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class Normalized(nn.Module):
    """``net((x - mean) / std)`` with per-channel ``mean``/``std``: keeps inputs in ``[0, 1]``
    for attacks while the network sees normalised data. Not part of the state dict."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def card_path(path) -> Path:
    """The JSON card that belongs to weights file ``path`` (same stem, ``.json``)."""
    return Path(path).with_suffix(".json")


def _jsonable(obj):
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_png_atomic(path, fig, *, dpi: int = 120) -> Path:
    """Save a matplotlib ``fig`` as PNG at ``path`` through a temp file and ``os.replace``, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return path


def write_npz_atomic(path, arrays: dict, *, compressed: bool = False) -> Path:
    """Write plain numpy ``arrays`` to ``path`` (npz, readable with ``allow_pickle=False``) through a temp
    file and ``os.replace``, creating the folder; a file object keeps numpy from appending ``.npz``."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)

    _atomic_write(path, write)
    return path


def write_json(path: Path, payload: dict) -> None:
    """Atomic JSON write (temp file in the same folder, then rename); ``gibbon reproduce``'s results
    and transfer matrices are written with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def _dataset_fields(dataset) -> dict:
    if dataset is None:
        return {}
    if isinstance(dataset, str):
        return {"dataset": dataset}
    try:
        return {
            "dataset": dataset.name,
            "classes": list(dataset.classes),
            "bounds": [float(b) for b in dataset.bounds],
            "input_shape": list(dataset.input_shape),
            "num_classes": int(dataset.num_classes),
            "data_source": getattr(dataset, "source", "") or None,
        }
    except AttributeError:
        raise GibbonInputError(f"dataset must be a gibbon Dataset or a name, got {type(dataset).__name__}") from None


def save(model: nn.Module, path, card: dict | None = None, *, dataset=None, **extra) -> Path:
    """Write ``model``'s weights to ``path`` (safetensors) and its card to ``path`` with ``.json``.

    Missing card fields are filled from the model (``build`` attaches ``gibbon_spec``; a loaded
    model carries ``gibbon_card``) or set to defaults; ``versions`` is always refreshed.
    ``dataset`` (a :class:`~gibbon.data.dataset.Dataset` or a name) fills ``dataset``,
    ``classes``, ``bounds``, ``input_shape``, ``num_classes`` and ``data_source``; ``card`` and
    then ``extra`` keyword fields override everything else. A :class:`Normalized` model is saved
    as its inner network plus the ``normalization`` field. Both files are written atomically.
    Returns ``path``.
    """
    if not isinstance(model, nn.Module):
        raise GibbonInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.suffix == ".json":
        raise GibbonInputError(
            f"{path} is the card's name; pass the weights path, e.g. {path.with_suffix('.safetensors')}")
    net, normalization = model, None
    if isinstance(model, Normalized):
        net = model.net
        normalization = {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()}
    full = {
        "format": CARD_FORMAT,
        "architecture": None,
        "arch_kwargs": {},
        "dataset": None,
        "input_shape": None,
        "num_classes": None,
        "classes": None,
        "bounds": [0.0, 1.0],
        "normalization": normalization,
        "wrappers": [],
        "seed": None,
        "epochs": None,
        "clean_test_accuracy": None,
    }
    # later sources win; the build spec is what load() must rebuild, so it beats the data's shape
    for source in (getattr(model, "gibbon_card", None), _dataset_fields(dataset),
                   getattr(net, "gibbon_spec", None), card, extra):
        if source:
            full.update(source)
    full["versions"] = versions()
    full["weights"] = path.name
    try:
        text = json.dumps(full, indent=2, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as e:
        raise GibbonInputError(f"the model card must be JSON-serialisable: {e}") from None

    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = safetensors_bytes(tensors, metadata={"format": "pt"})  # via bytes: usual file permissions
    _atomic_write(path, lambda tmp: tmp.write_bytes(blob))
    _atomic_write(card_path(path), lambda tmp: tmp.write_text(text + "\n"))
    return path


def _weights_and_card_paths(path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    return path, card_path(path)


def read_card(path) -> dict:
    """The card of the model saved at ``path`` (weights path, card path or cache entry folder)."""
    _, cpath = _weights_and_card_paths(path)
    if not cpath.exists():
        raise GibbonInputError(
            f"no model card at {cpath}; gibbon.zoo.save writes it next to the weights. For a model "
            "without a card use gibbon.zoo.load_user_model('pkg.module:factory', weights=...)"
        )
    try:
        card = json.loads(cpath.read_text())
    except (OSError, ValueError) as e:
        raise GibbonInputError(f"cannot read model card {cpath}: {e}") from None
    if not isinstance(card, dict):
        raise GibbonInputError(f"model card {cpath} must hold a JSON object")
    return card


def _load_weights(model: nn.Module, wpath: Path, what: str) -> None:
    try:
        state = load_file(str(wpath), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise GibbonInputError(
            f"cannot read {wpath} as safetensors ({e}); save weights with "
            "safetensors.torch.save_file(model.state_dict(), path)"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise GibbonInputError(f"the weights in {wpath} do not fit {what}: {e}") from None


def load(path, device="cpu", *, trust_code: bool = False) -> nn.Module:
    """Load a model saved by :func:`save` (``path``: the ``.safetensors`` file, its ``.json``
    card, or a folder holding ``model.safetensors``).

    Rebuilds the card's architecture, loads the weights strictly, wraps it in
    :class:`Normalized` if the card has a ``normalization``, moves it to ``device`` and returns
    it in eval mode with the card attached as ``model.gibbon_card``. Does not touch the global RNG.

    A card whose model is a user's ``factory`` (``"pkg.module:function"``) names code to import
    and run: anyone who hands you a weights + card pair could run anything on your machine, so
    such a card loads only with ``trust_code=True`` (``--trust-code`` on the command line).
    Cards naming a zoo architecture never run code from the card and need no opt-in.
    """
    wpath, _ = _weights_and_card_paths(path)
    if not wpath.exists():
        raise GibbonInputError(f"no model weights at {wpath}")
    card = read_card(wpath)
    arch = card.get("architecture")
    if arch is None and card.get("factory"):
        if trust_code is not True:
            raise GibbonInputError(
                f"model card {card_path(wpath)} names code to run (factory {card['factory']!r}); gibbon imports "
                "and calls it only with trust_code=True (--trust-code on the command line): pass it only for a "
                "card you wrote or trust, or load the weights with gibbon.zoo.load_user_model('pkg.module:factory')"
            )
        return load_user_model(card["factory"], weights=wpath, card=card, device=device)
    if arch not in ARCHITECTURES:
        raise GibbonInputError(
            f"model card {card_path(wpath)} names architecture {arch!r}, which gibbon does not know "
            f"(known: {', '.join(ARCHITECTURES)}); load it with gibbon.zoo.load_user_model"
        )
    if card.get("input_shape") is None or card.get("num_classes") is None:
        raise GibbonInputError(f"model card {card_path(wpath)} must give input_shape and num_classes")
    with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not move the caller's RNG
        model = build(arch, input_shape=card["input_shape"], num_classes=card["num_classes"],
                      **(card.get("arch_kwargs") or {}))
    _load_weights(model, wpath, f"architecture {arch!r}")
    norm = card.get("normalization")
    if norm:
        model = Normalized(model, norm["mean"], norm["std"])
    model.to(device).eval()
    model.gibbon_card = card
    return model


def load_user_model(spec: str, weights=None, card=None, device="cpu") -> nn.Module:
    """Load your own model: ``spec`` is ``"pkg.module:factory"``; ``factory()`` must return an
    ``nn.Module``, into which ``weights`` (a ``.safetensors`` state dict) is loaded strictly.

    ``card`` is a dict, a path to a JSON card, or None (then the ``.json`` beside ``weights`` is
    used if there is one). The model is returned in eval mode on ``device`` with
    ``model.gibbon_card`` set (at least ``{"architecture": None, "factory": spec}``).
    """
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise GibbonInputError(
            f"model spec must look like 'package.module:factory' (a module path, a colon, and a "
            f"function or class in it), got {spec!r}"
        )
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import-time failure of user code
        raise GibbonInputError(
            f"cannot import module {module_name!r} for model {spec!r}: {type(e).__name__}: {e} "
            "(is it installed, or on PYTHONPATH?)"
        ) from e
    factory = module
    for part in attr.split("."):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            raise GibbonInputError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})") from None
    if not callable(factory):
        raise GibbonInputError(f"{spec!r} is not callable; it must be a function or class returning an nn.Module")
    model = factory()
    if not isinstance(model, nn.Module):
        raise GibbonInputError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    wpath = None
    if weights is not None:
        wpath = Path(weights)
        if not wpath.exists():
            raise GibbonInputError(f"no weights file at {wpath}")
        _load_weights(model, wpath, f"the module built by {spec}()")
    if card is None:
        card = read_card(wpath) if wpath is not None and card_path(wpath).exists() else {}
    elif not isinstance(card, dict):
        card = read_card(card)
    card = {"architecture": None, **card, "factory": spec}
    model.to(device).eval()
    model.gibbon_card = card
    return model

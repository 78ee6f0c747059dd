"""DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang 2016, "Deep Learning with
Differential Privacy", arXiv:1607.00133) through Opacus (Yousefpour et al. 2021, arXiv:2109.12298).

Each step clips every example's gradient to L2 norm ``clip`` and adds Gaussian noise of
standard deviation ``noise * clip`` to their sum; batches are Poisson samples (each example in
with probability ``1 / ceil(n / batch_size)``), which is what the accountants assume. The privacy spent,
epsilon at ``delta``, is tracked by Opacus's RDP accountant (Mironov 2017, arXiv:1702.07476)
or its PRV accountant (Gopi, Lee & Wutschitz 2021, arXiv:2106.02848) and written into every
epoch of the history and into the model card. Nothing here computes per-sample gradients or
privacy by hand.

    gibbon train --arch lenet5 --dataset mnist --epochs 15 --batch-size 256 --lr 1e-3 \\
        --defense dp:noise=1.1,clip=1.0,delta=1e-5
    gibbon train ... --defense dp:epsilon=3,clip=1.0,delta=1e-5   # the noise is chosen for epsilon 3

Models with layers that mix examples in a batch (BatchNorm) break per-example clipping and
are refused with the layers named; GroupNorm or LayerNorm are the private replacements.
Noise comes from a seeded generator, so a run is reproducible; ``secure=true`` draws it from
Opacus's cryptographically secure generator instead (for a real release; not reproducible).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.defenses.registry import DefenseConfig, register

ACCOUNTANTS = ("rdp", "prv")
MAX_USEFUL_NOISE = 1e3
CHECKPOINT = "dp_checkpoint.pt"


def privacy_spent(noise: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """Epsilon after ``steps`` Poisson-sampled Gaussian steps (Opacus's accountant, no training).

    Example (Abadi et al.'s MNIST "medium noise": q = 0.01, sigma = 4):
        >>> round(privacy_spent(4.0, 0.01, 10_000, 1e-5), 2)
        1.04
    """
    check_privacy_settings(noise=noise, sample_rate=sample_rate, delta=delta, accountant=accountant)
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(float(noise), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=float(delta)))


def noise_for_epsilon(epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """The smallest noise multiplier (to Opacus's search tolerance) that keeps epsilon at most ``epsilon``."""
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise GibbonInputError(f"dp: epsilon must be a finite number > 0, got {epsilon!r}")
    check_privacy_settings(noise=1.0, sample_rate=sample_rate, delta=delta, accountant=accountant)
    from opacus.accountants.utils import get_noise_multiplier

    # Opacus doubles the noise up to 1e6 before it gives up (minutes); a noise multiplier of 1,000
    # already drowns any gradient, so a target it cannot meet is refused at once
    floor = privacy_spent(MAX_USEFUL_NOISE, sample_rate, steps, delta, accountant)
    if floor > epsilon:
        raise GibbonInputError(f"dp: epsilon {epsilon:g} cannot be reached at delta {delta:g} with sampling rate "
                               f"{sample_rate:.3g} over {steps} steps (even noise {MAX_USEFUL_NOISE:g} spends "
                               f"{floor:.3g}); raise epsilon or delta, train fewer steps or use smaller batches")
    try:
        return float(get_noise_multiplier(target_epsilon=float(epsilon), target_delta=float(delta),
                                          sample_rate=float(sample_rate), steps=int(steps), accountant=accountant))
    except ValueError as err:  # "The privacy budget is too low."
        raise GibbonInputError(f"dp: epsilon {epsilon:g} cannot be reached at delta {delta:g} ({err}); raise epsilon "
                               "or delta") from None


def check_privacy_settings(*, noise, sample_rate, delta, accountant, clip=1.0) -> None:
    if accountant not in ACCOUNTANTS:
        raise GibbonInputError(f"dp: accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    if not (isinstance(noise, (int, float)) and noise > 0 and math.isfinite(noise)):
        raise GibbonInputError(f"dp: noise (the noise multiplier sigma) must be a finite number > 0, got {noise!r}")
    if not (isinstance(clip, (int, float)) and clip > 0 and math.isfinite(clip)):
        raise GibbonInputError(f"dp: clip (the per-example gradient norm bound) must be > 0, got {clip!r}")
    if not 0 < sample_rate <= 1:
        raise GibbonInputError(f"dp: the sampling rate batch_size / n must be in (0, 1], got {sample_rate!r}")
    if not 0 < delta < 1:
        raise GibbonInputError(f"dp: delta must be in (0, 1) (1/n or smaller is usual), got {delta!r}")


def batch_mixing_layers(model: nn.Module) -> list[str]:
    """Names of the layers Opacus cannot make private (BatchNorm and its like), from its validator."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    return sorted({str(e).split(":")[0].strip() or type(e).__name__ for e in errors})


@register("dp")
@dataclass(frozen=True)
class DPSGDTraining(DefenseConfig):
    """``--defense dp:noise=1.1,clip=1.0,delta=1e-5`` or ``dp:epsilon=3,clip=1.0,delta=1e-5``.

    ``noise`` is the noise multiplier sigma (noise std = sigma * clip); ``epsilon > 0`` picks
    sigma instead so that the whole run spends at most that epsilon at ``delta``. ``accountant``
    is ``rdp`` or ``prv``. Training uses ``fit``'s ``epochs``, ``batch_size`` (the expected
    Poisson batch), ``lr``, ``optimizer`` and ``seed``; ``schedule`` and ``weight_decay`` are
    not supported here.

    Example:
        >>> from gibbon.defenses import parse_defense
        >>> parse_defense("dp:noise=1.1").spec()
        'dp:accountant=rdp,clip=1.0,delta=1e-05,epsilon=0.0,noise=1.1,secure=False'
    """

    paper = "Abadi et al. 2016, arXiv:1607.00133 (via Opacus, arXiv:2109.12298)"
    noise: float = 1.1
    clip: float = 1.0
    delta: float = 1e-5
    epsilon: float = 0.0
    accountant: str = "rdp"
    secure: bool = False

    def privacy(self, history: list[dict]) -> dict | None:
        return privacy_card(history)

    def fit(self, model, train, *, epochs: int = 1, batch_size: int = 128, optimizer: str = "adam", lr: float = 1e-3,
            schedule=None, val=None, seed: int = 0, checkpoint_dir=None, progress: bool = True, device=None,
            weight_decay: float = 0.0, callback=None):
        return train_dp(model, train, noise=self.noise, clip=self.clip, delta=self.delta, epsilon=self.epsilon or None,
                        accountant=self.accountant, secure=self.secure, epochs=epochs, batch_size=batch_size,
                        optimizer=optimizer, lr=lr, schedule=schedule, val=val, seed=seed,
                        checkpoint_dir=checkpoint_dir, progress=progress, device=device, weight_decay=weight_decay,
                        callback=callback)


def train_dp(model: nn.Module, train, *, noise: float = 1.1, clip: float = 1.0, delta: float = 1e-5,
             epsilon: float | None = None, accountant: str = "rdp", secure: bool = False, epochs: int = 1,
             batch_size: int = 128, optimizer: str = "adam", lr: float = 1e-3, schedule=None, val=None, seed: int = 0,
             checkpoint_dir=None, progress: bool = True, device=None, weight_decay: float = 0.0, callback=None):
    """Train ``model`` in place with DP-SGD (see the module docstring); returns a
    :class:`gibbon.zoo.training.FitResult` whose history entries carry ``epsilon``, ``delta`` and
    ``noise``. With ``checkpoint_dir`` the model, optimizer, accountant and RNG states are
    written after every epoch and a rerun with the same settings resumes after the last one."""
    from opacus import PrivacyEngine

    from gibbon.zoo.training import FitResult, accuracy, make_optimizer, model_device

    if schedule not in (None, "constant") or weight_decay:
        raise GibbonInputError("dp: --schedule and weight decay are not supported with DP-SGD; drop them")
    if not isinstance(model, nn.Module):
        raise GibbonInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if int(epochs) != epochs or epochs < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise GibbonInputError(f"dp: epochs and batch_size must be whole numbers >= 1, got {epochs!r}, {batch_size!r}")
    n = len(train.y)
    if n == 0:
        raise GibbonInputError("the training set is empty")
    # Opacus samples each example with rate 1 / (batches per epoch): an expected batch of n / ceil(n / batch_size)
    per_epoch = math.ceil(n / batch_size)
    sample_rate, steps = 1.0 / per_epoch, int(epochs) * per_epoch
    if not delta < 1.0 / n:
        # delta is the chance that the guarantee fails outright; at 1/n a mechanism that publishes one
        # random training example whole satisfies it
        raise GibbonInputError(f"dp: delta {delta:g} must be below 1/n = {1 / n:.3g} for {n} training examples "
                               f"(1/n^1.1 or 1e-5 is usual); lower delta")
    if epsilon is not None:
        noise = noise_for_epsilon(float(epsilon), sample_rate, steps, delta, accountant)
    check_privacy_settings(noise=noise, sample_rate=sample_rate, delta=delta, accountant=accountant, clip=clip)
    mixing = batch_mixing_layers(model)
    if mixing:
        raise GibbonInputError(f"dp: the model has layers that mix examples in a batch ({'; '.join(mixing)}), which "
                               "per-example clipping cannot bound; use an architecture without BatchNorm or replace "
                               "it with GroupNorm (opacus.validators.ModuleValidator.fix)")
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    config = {"noise": noise, "clip": clip, "delta": delta, "accountant": accountant, "epochs": int(epochs),
              "batch_size": int(batch_size), "optimizer": optimizer, "lr": lr, "seed": int(seed), "n": n,
              "secure": bool(secure)}

    sampling = torch.Generator().manual_seed(int(seed))
    noise_gen = None if secure else torch.Generator(device=device).manual_seed(int(seed) + 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train.x, train.y),
                                         batch_size=int(batch_size), generator=sampling)
    engine = PrivacyEngine(accountant=accountant, secure_mode=bool(secure))
    opt = make_optimizer(optimizer, model.parameters(), lr, 0.0)
    private, dp_opt, dp_loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                                     noise_multiplier=float(noise), max_grad_norm=float(clip),
                                                     poisson_sampling=True, noise_generator=noise_gen)
    result, start = FitResult(), 0
    path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    with torch.random.fork_rng(devices=[]):  # dropout's global RNG is seeded here; the caller's is untouched
        torch.manual_seed(int(seed))
        if path is not None and path.exists():
            start = _resume(path, config, model, dp_opt, engine, sampling, noise_gen, result)
        for epoch in range(start, int(epochs)):
            t0 = time.perf_counter()
            private.train()
            loss_sum, correct, counted = 0.0, 0, 0
            for x, y in dp_loader:
                if len(y) == 0:  # Poisson sampling can draw an empty batch: nothing to learn, privacy still spent
                    continue
                x, y = x.to(device), y.to(device)
                dp_opt.zero_grad(set_to_none=True)
                logits = private(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                dp_opt.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                counted += len(y)
            entry = {"epoch": epoch + 1, "train_loss": loss_sum / max(counted, 1),
                     "train_accuracy": correct / max(counted, 1),
                     "val_accuracy": accuracy(model, val) if val is not None else None, "lr": lr,
                     "seconds": time.perf_counter() - t0, "epsilon": float(engine.get_epsilon(float(delta))),
                     "delta": float(delta), "noise": float(noise), "clip": float(clip), "accountant": accountant}
            result.history.append(entry)
            if progress:
                print(f"dp epoch {epoch + 1}/{epochs}: loss {entry['train_loss']:.4f} acc {entry['train_accuracy']:.3f}"
                      f" epsilon {entry['epsilon']:.3f} (delta {delta:g})", flush=True)
            if path is not None:
                _save(path, config, epoch + 1, model, dp_opt, engine, sampling, noise_gen, result)
            if callback is not None:
                callback(epoch + 1, entry)
    private._close()  # Opacus's hooks and per-sample gradients off the model: it is a plain module again
    model.eval()
    result.val_accuracy = result.history[-1]["val_accuracy"] if result.history else None
    return result


def privacy_card(history: list[dict]) -> dict | None:
    """What a model card records of a DP-SGD run: the final epsilon and its settings (None if not private)."""
    if not history or "epsilon" not in history[-1]:
        return None
    last = history[-1]
    return {key: last[key] for key in ("epsilon", "delta", "noise", "clip", "accountant")} | {
        "epochs": last["epoch"], "mechanism": "DP-SGD (Opacus), Poisson sampling"}


def _save(path: Path, config, epoch, model, dp_opt, engine, sampling, noise_gen, result) -> None:
    from gibbon.zoo.training import _atomic_torch_save

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": "gibbon-dp-checkpoint/1", "config": json.dumps(config, sort_keys=True), "epoch": epoch,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": dp_opt.original_optimizer.state_dict(),
             "accountant": json.dumps(engine.accountant.history), "sampling_rng": sampling.get_state(),
             "noise_rng": None if noise_gen is None else noise_gen.get_state(), "cpu_rng": torch.get_rng_state(),
             "history": json.dumps(result.history)}
    _atomic_torch_save(state, path)


def _resume(path: Path, config, model, dp_opt, engine, sampling, noise_gen, result) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file
        raise GibbonInputError(f"cannot read the DP-SGD checkpoint {path} ({e}); delete it to start again") from None
    if state.get("config") != json.dumps(config, sort_keys=True):
        raise GibbonInputError(f"the DP-SGD checkpoint {path} is from a run with other settings; delete it or use "
                               "another checkpoint folder")
    model.load_state_dict(state["model"])
    dp_opt.original_optimizer.load_state_dict(state["optimizer"])
    engine.accountant.history = [tuple(h) for h in json.loads(state["accountant"])]
    sampling.set_state(state["sampling_rng"])
    if noise_gen is not None and state["noise_rng"] is not None:
        noise_gen.set_state(state["noise_rng"])
    torch.set_rng_state(state["cpu_rng"])
    result.history.extend(json.loads(state["history"]))
    return int(state["epoch"])

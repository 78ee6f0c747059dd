"""Simulated print-and-photo, and whether adversarial examples survive it (Kurakin, Goodfellow &
Bengio 2016, "Adversarial examples in the physical world", arXiv:1607.02533).

Kurakin et al. printed adversarial images, photographed them with a phone and measured the
*destruction rate*: among images whose clean version is classified correctly before and after
the photo, and whose adversarial version fooled the model before, the share the photo turns back
into a correct prediction. Survival is one minus it. Their finding: "fast" (FGSM) examples
survive better than iterative ones, whose perturbation is finer and more fragile.

The photo is simulated by a differentiable random pipeline of kornia ops: a small affine warp
(rotation, shift, scale), Gaussian blur, brightness and contrast changes, Gaussian sensor noise
and JPEG re-encoding (kornia's differentiable codec). Being differentiable, the same pipeline
inside :class:`gibbon.defenses.eot.EOT` gives examples that are made to survive it (Athalye,
Engstrom, Ilyas & Kwok 2018, "Synthesizing Robust Adversarial Examples", arXiv:1707.07397).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError, check_bounds
from gibbon.zoo.training import predict_labels


@dataclass(frozen=True)
class PhotoTransform:
    """The random photo's ranges (each drawn per image and per call).

    Attributes:
        degrees: rotation in [-degrees, degrees]. translate: shift, as a fraction of the side.
        scale: zoom range. blur_sigma: Gaussian blur sigma range (3x3 kernel).
        brightness, contrast: ColorJitter strengths. noise_std: Gaussian sensor noise.
        jpeg_quality: JPEG quality range; None skips JPEG.
    """

    degrees: float = 5.0
    translate: float = 0.05
    scale: tuple = (0.95, 1.05)
    blur_sigma: tuple = (0.1, 1.0)
    brightness: float = 0.1
    contrast: float = 0.1
    noise_std: float = 0.02
    jpeg_quality: tuple | None = (70.0, 95.0)

    def to_dict(self) -> dict:
        return asdict(self)


class PhotoPipeline(nn.Module):
    """``x -> photo(x)``, a fresh random draw per call, differentiable, clipped to ``bounds``."""

    def __init__(self, transform: PhotoTransform = PhotoTransform(), bounds=(0.0, 1.0)):
        super().__init__()
        import kornia.augmentation as K

        self.transform, self.bounds = transform, check_bounds(bounds)
        t = transform
        if t.degrees < 0 or not 0 <= t.translate < 1 or t.noise_std < 0:
            raise GibbonInputError("photo transform: degrees and noise_std must be >= 0 and translate in [0, 1)")
        self.geometric = K.AugmentationSequential(
            K.RandomAffine(degrees=t.degrees, translate=(t.translate, t.translate), scale=tuple(t.scale), p=1.0),
            K.RandomGaussianBlur((3, 3), tuple(t.blur_sigma), p=1.0),
            K.ColorJitter(brightness=t.brightness, contrast=t.contrast, p=1.0),
            K.RandomGaussianNoise(std=t.noise_std, p=1.0) if t.noise_std > 0 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        lo, hi = self.bounds
        unit = (x - lo) / (hi - lo)
        y = self.geometric(unit).clamp(0, 1)
        if self.transform.jpeg_quality is not None:
            q_lo, q_hi = self.transform.jpeg_quality
            quality = q_lo + (q_hi - q_lo) * torch.rand(len(y), device=y.device)
            # the codec wants RGB; a grey image goes through as three equal channels and comes back averaged
            rgb = y.expand(-1, 3, -1, -1).contiguous() if y.shape[1] == 1 else y
            coded = jpeg_codec_differentiable(rgb, quality)
            y = (coded.mean(1, keepdim=True) if x.shape[1] == 1 else coded).clamp(0, 1)
        return lo + (hi - lo) * y


class Photographed(nn.Module):
    """``model(photo(x))``: the model as the camera sees the (printed) input."""

    def __init__(self, model, pipeline: PhotoPipeline):
        super().__init__()
        self.model, self.pipeline = model, pipeline

    def forward(self, x):
        return self.model(self.pipeline(x))


def survival(model, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pipeline: PhotoPipeline, *,
             draws: int = 1, seed: int = 0) -> dict:
    """Kurakin et al.'s destruction rate, and survival = 1 - destruction, over ``draws`` photos.

    Each draw photographs the clean and the adversarial batch with the *same* random parameters
    (as one printed page holds both). Counted: images classified correctly clean, fooled
    adversarially, and still correct when the clean one is photographed.
    """
    if x.shape != x_adv.shape or len(x) != len(y):
        raise GibbonInputError(f"x {tuple(x.shape)}, x_adv {tuple(x_adv.shape)} and y {tuple(y.shape)} must match")
    if int(draws) != draws or draws < 1:
        raise GibbonInputError(f"draws must be a whole number >= 1, got {draws!r}")
    before = (predict_labels(model, x) == y) & (predict_labels(model, x_adv) != y)
    counted = survived = 0
    for d in range(int(draws)):
        photos = []
        for batch in (x, x_adv):
            with torch.random.fork_rng():  # the same draw of every random parameter for both batches
                torch.manual_seed(seed * 1_000 + d)
                with torch.no_grad():
                    photos.append(torch.cat([pipeline(batch[i:i + 500]) for i in range(0, len(batch), 500)]))
        eligible = before & (predict_labels(model, photos[0]) == y)
        counted += int(eligible.sum())
        survived += int((eligible & (predict_labels(model, photos[1]) != y)).sum())
    rate = survived / counted if counted else float("nan")
    return {"counted": counted, "survived": survived, "survival": rate,
            "destruction_rate": 1 - rate if counted else float("nan"),
            "adversarial_before": float(before.float().mean())}


def survival_table(model, data, attacks: list, eps_list: list, pipeline: PhotoPipeline, *, draws: int = 2,
                   eot_samples: int = 0, seed: int = 0, batch_size: int = 250) -> list:
    """Survival of each attack's examples at each eps (rows of dicts).

    ``attacks`` are registry specs (``"fgsm"``, ``"bim"``, ``"illc"``: least-likely target); with
    ``eot_samples`` > 0, a row ``"bim-eot"`` attacks ``EOT(model o photo)`` with that many draws per step.
    """
    from gibbon.attacks.registry import parse_attack
    from gibbon.attacks.run import run_attack
    from gibbon.defenses.eot import EOT

    rows = []
    for eps in eps_list:
        for spec in list(attacks) + (["bim-eot"] if eot_samples else []):
            if spec == "bim-eot":
                target_model, attack, target = EOT(Photographed(model, pipeline), samples=eot_samples), "bim", None
            else:
                target_model, attack = model, spec
                target = "least-likely" if spec.split(":")[0] == "illc" else None
            result = run_attack(target_model, data, parse_attack(attack), eps=eps, target=target, seed=seed,
                                batch_size=batch_size, progress=False)
            rows.append({"attack": spec, "eps": float(eps),
                         **survival(model, data.x, result.x_adv, data.y, pipeline, draws=draws, seed=seed)})
    return rows

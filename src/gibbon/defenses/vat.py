"""Virtual adversarial training (Miyato, Maeda, Koyama & Ishii 2018, "Virtual Adversarial
Training: A Regularization Method for Supervised and Semi-Supervised Learning",
arXiv:1704.03976).

VAT adds to the training loss the *local distributional smoothness* (LDS, section 3.1)

    LDS(x) = KL( p(y | x) || p(y | x + r_vadv) ),   r_vadv = argmax_{||r||_2 <= eps} KL(...),

which needs no label: ``p(y | x)`` is the model's own prediction, held constant. ``r_vadv`` is
found by power iteration (section 3.2, algorithm 1): from a random unit vector ``d``, take the
normalised gradient of ``KL(p(x) || p(x + xi d))`` w.r.t. the perturbation (a finite-difference
product ``H d`` with the KL's Hessian at ``r = 0``), ``power_iterations`` times, then scale to
``eps``. Perturbations are L2, one direction per sample. Supervised VAT minimises
``CE(x, y) + alpha * R_vadv`` with ``R_vadv`` the mean LDS; semi-supervised VAT takes the
cross-entropy on the labelled inputs only and ``R_vadv`` over labelled and unlabelled ones.

Threat model of the regulariser: white-box, L2 ball of radius ``eps``, untargeted, label-free.
``x + r_vadv`` is **not** clipped to the input box (the paper does not clip; a training
objective may query the model slightly outside the box, see ``docs/design.md``). Gradients are
taken with ``torch.autograd.grad`` w.r.t. the perturbation only; the perturbed forward passes
use BatchNorm batch statistics in train mode but do not update the running averages (the
authors' ``update_batch_stat=False``).

``xi = 1e-6`` (the paper's value) is below float32's resolution of ``x + r`` for inputs of
order 1, so in float32 a power iteration returns the direction of ``J^T e``, ``J`` the input
Jacobian of the logits and ``e`` rounding noise: not the dominant eigenvector (cosine about 0
with the float64 one) but a direction in the row space of ``J``, nearly as adversarial (an MNIST MLP:
KL 0.097 at eps 0.3 against 0.108 for the float64 ``r_vadv`` and 0.0002 for a random
direction). ``xi`` around 0.1 recovers the eigenvector in float32 (cosine 0.999), yet trained
worse on MNIST with 100 labels (16.4% against 9.6% test error after 8 epochs): the default
stays the paper's, the float64 tests check the power iteration itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.defenses.registry import DefenseConfig, register


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 unit vectors; rescaled by the max first so tiny ``H d`` does not underflow."""
    flat = d.reshape(d.shape[0], -1)
    flat = flat / flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)).reshape(d.shape)


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(p_logits) || softmax(q_logits))``."""
    log_p = F.log_softmax(p_logits, dim=-1)
    return (log_p.exp() * (log_p - F.log_softmax(q_logits, dim=-1))).sum(dim=-1)


@contextlib.contextmanager
def _frozen_batch_stats(model: torch.nn.Module):
    """BatchNorm layers in train mode keep using batch statistics but do not update their running
    averages (the paper's ``update_batch_stat=False``); every layer's flag is put back."""
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def _check(eps, xi, power_iterations) -> None:
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise GibbonInputError(f"vat: eps must be > 0, got {eps!r} (Miyato et al.: 2.0 supervised, 0.3 "
                               "semi-supervised MNIST, L2 on [0, 1] images)")
    if not (isinstance(xi, (int, float)) and xi > 0):
        raise GibbonInputError(f"vat: xi must be > 0, got {xi!r} (the paper's finite-difference scale is 1e-6)")
    if int(power_iterations) != power_iterations or power_iterations < 0:
        raise GibbonInputError(f"vat: power_iterations must be a whole number >= 0 (1 in the paper; 0 = a "
                               f"random direction), got {power_iterations!r}")


def virtual_adversarial_direction(model, x: torch.Tensor, p_logits: torch.Tensor, *, xi: float = 1e-6,
                                  power_iterations: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit L2 direction (per sample) of ``r_vadv`` by power iteration (Miyato et al., section 3.2).

    ``p_logits`` are the clean logits ``model(x)`` of the same batch in the same mode: were they
    computed otherwise, the KL would not vanish at ``r = 0`` and its gradient would point at
    that mismatch instead of along the dominant eigenvector of the Hessian.
    ``power_iterations=0`` returns the random start (the paper's RPT baseline direction).
    """
    x, p_logits = x.detach(), p_logits.detach()
    d = _unit(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
    with torch.enable_grad(), _frozen_batch_stats(model):
        for _ in range(int(power_iterations)):
            r = (xi * d).requires_grad_(True)  # finite difference at r = xi d
            (grad,) = torch.autograd.grad(_kl(p_logits, model(x + r)).sum(), r)
            d = _unit(grad)  # d <- g / ||g||, g = grad_r KL ~ xi H d
    return d.detach()


def vat_loss(model, x: torch.Tensor, *, eps: float, xi: float = 1e-6, power_iterations: int = 1,
             logits: torch.Tensor | None = None, generator: torch.Generator | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """The LDS term ``KL(p(y | x) || p(y | x + r_vadv))`` with ``||r_vadv||_2 = eps`` per sample.

    Args:
        model: ``x -> logits``, used in its current mode (``fit`` trains in train mode).
        x: inputs ``(B, ...)``; no labels are used.
        eps: L2 radius of ``r_vadv`` per sample (paper, MNIST: 2.0 supervised, 0.3 semi-supervised).
        xi: finite-difference scale of the power iteration (1e-6 in the paper).
        power_iterations: ``K`` (1 in the paper; 0 gives a random direction of norm ``eps``).
        logits: ``model(x)`` if the caller has it (same batch, same mode); it is detached.
        generator: draws the random start; default the global RNG (``fit`` seeds it).
        reduction: ``"mean"`` over the batch or ``"none"`` (per-sample ``(B,)``).

    Returns:
        The LDS; differentiable w.r.t. the model's parameters through ``p(y | x + r_vadv)`` only.
        No ``param.grad`` is filled; the model's mode and flags are as they were.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> lds = vat_loss(model, torch.rand(5, 1, 2, 2), eps=0.5, generator=torch.Generator().manual_seed(0))
        >>> lds.shape, bool(lds >= 0), lds.requires_grad
        (torch.Size([]), True, True)

    References:
        Miyato et al. (2018), arXiv:1704.03976, sections 3.1-3.2, algorithm 1.
    """
    _check(eps, xi, power_iterations)
    if reduction not in ("mean", "none"):
        raise GibbonInputError(f"vat: reduction must be 'mean' or 'none', got {reduction!r}")
    if logits is None:
        with torch.no_grad():
            logits = model(x)
    p_logits = logits.detach()
    d = virtual_adversarial_direction(model, x, p_logits, xi=xi, power_iterations=power_iterations,
                                      generator=generator)
    with _frozen_batch_stats(model):
        lds = _kl(p_logits, model(x.detach() + eps * d))  # LDS at r_vadv = eps d, not clipped
    return lds.mean() if reduction == "mean" else lds


def vat_objective(eps: float, xi: float = 1e-6, power_iterations: int = 1, alpha: float = 1.0) -> Callable:
    """Supervised VAT for :func:`gibbon.zoo.fit`: ``CE(x, y) + alpha * LDS(x)`` (section 3.1).

    Args:
        eps, xi, power_iterations: as in :func:`vat_loss`. alpha: weight of the LDS (1 in the paper).

    Returns:
        ``objective(model, x, y) -> (loss, clean logits)``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss, logits = vat_objective(2.0)(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.shape, logits.shape
        (torch.Size([]), torch.Size([5, 3]))

    References:
        Miyato et al. (2018), arXiv:1704.03976, section 3.1 and section 4.1.
    """
    _check(eps, xi, power_iterations)
    if not alpha >= 0:
        raise GibbonInputError(f"vat: alpha must be >= 0, got {alpha!r}")

    def objective(model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if alpha:
            loss = loss + alpha * vat_loss(model, x, eps=eps, xi=xi, power_iterations=power_iterations,
                                           logits=logits)
        return loss, logits

    objective.__qualname__ = f"vat_objective(eps={eps}, xi={xi}, power_iterations={power_iterations}, alpha={alpha})"
    return objective


def vat_semi_supervised_objective(labelled, *, eps: float = 0.3, xi: float = 1e-6, power_iterations: int = 1,
                                  alpha: float = 1.0, labelled_batch_size: int = 64,
                                  lds_on_labelled: bool = False) -> Callable:
    """Semi-supervised VAT (sections 3.1 and 4.2): ``fit`` walks over *unlabelled* inputs; each
    step adds the cross-entropy of a labelled mini-batch drawn from ``labelled``.

    Loss per step: ``CE(labelled batch) + alpha * LDS(unlabelled batch)``. The paper's
    ``R_vadv`` averages the LDS over labelled and unlabelled inputs alike; walking ``fit`` over
    the *whole* training set with labels hidden does that (the labelled images are a uniform
    100 / 50,000 of it). The labels ``fit`` passes with the unlabelled batch are never read.

    The cross-entropy and the LDS use separate forward passes, as in the authors' code, so
    BatchNorm normalises each batch with its own statistics. One joint forward of both batches
    made even the labels-only baseline worse on MNIST with 100 labels (one run: 43% against 29%
    test error after 400 steps): the cross-entropy then also learns through the unlabelled
    images' batch statistics.

    Each step draws from the global RNG the labelled indices (without replacement inside a
    batch), then one seed for the LDS's random start, *whatever* ``alpha`` is: so ``alpha=0``,
    the labels-only baseline, is trained the same way, on the same labelled batches in the same
    order (for a model that draws no randomness itself, e.g. no dropout).

    Args:
        labelled: a :class:`gibbon.data.Dataset` of the labelled examples.
        eps, xi, power_iterations: as in :func:`vat_loss` (eps is unused when ``alpha == 0``).
        alpha: weight of the LDS (1 in the paper); 0 = labels-only baseline.
        labelled_batch_size: labelled examples per step (64 in the paper's MNIST setting; all
            of them when there are fewer).
        lds_on_labelled: also put the whole labelled batch into the LDS term. Off by default:
            it weights the few labelled images far above their share of ``R_vadv``, and made
            MNIST-100 training swing (one run, MLP without output BatchNorm: 27% against 17%
            test error after 800 steps).

    Returns:
        ``objective(model, x_unlabelled, ignored) -> loss`` (no logits: ``fit`` then reports no
        training accuracy against labels the method must not see).

    Example:
        >>> from gibbon.data import Dataset
        >>> few = Dataset("toy", "train", torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]), ("a", "b", "c"))
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss = vat_semi_supervised_objective(few, eps=0.3)(model, torch.rand(8, 1, 2, 2), None)
        >>> loss.shape, loss.requires_grad
        (torch.Size([]), True)

    References:
        Miyato et al. (2018), arXiv:1704.03976, section 3.1 and section 4.2.
    """
    if not alpha >= 0:
        raise GibbonInputError(f"vat: alpha must be >= 0, got {alpha!r} (0 = labels-only baseline)")
    if alpha:
        _check(eps, xi, power_iterations)
    if int(labelled_batch_size) != labelled_batch_size or labelled_batch_size < 1:
        raise GibbonInputError(f"vat: labelled_batch_size must be a whole number >= 1, got {labelled_batch_size!r}")
    try:
        n = len(labelled.y)
        lx, ly = labelled.x, labelled.y
    except AttributeError:
        raise GibbonInputError(f"labelled must be a gibbon Dataset, got {type(labelled).__name__}") from None
    if n == 0:
        raise GibbonInputError("vat: the labelled set is empty; pass at least one labelled example")
    b = min(int(labelled_batch_size), n)

    def objective(model, x, _y=None):
        idx = torch.randperm(n)[:b]
        seed = int(torch.randint(0, 2**62, (1,)))  # drawn even when alpha == 0: same stream for both
        xl, yl = lx[idx].to(x.device), ly[idx].to(x.device)
        loss = F.cross_entropy(model(xl), yl)
        if alpha:
            xu = torch.cat([x, xl]) if lds_on_labelled else x
            gen = torch.Generator(device=x.device).manual_seed(seed)
            loss = loss + alpha * vat_loss(model, xu, eps=eps, xi=xi, power_iterations=power_iterations,
                                           generator=gen)
        return loss

    objective.__qualname__ = (f"vat_semi_supervised_objective(n_labelled={n}, eps={eps}, xi={xi}, "
                              f"power_iterations={power_iterations}, alpha={alpha}, labelled_batch_size={b}, "
                              f"lds_on_labelled={lds_on_labelled})")
    return objective


def labelled_split(train, labels: int, seed: int = 0):
    """A class-balanced labelled subset of ``labels`` images and the rest, as two Datasets.

    Each class gets ``labels // K`` images (the first ``labels % K`` classes one more), drawn
    with a private generator seeded with ``seed`` (the global RNG is not touched).

    Example:
        >>> from gibbon import data
        >>> few, rest = labelled_split(data.load("digits", "train"), 20)
        >>> len(few), len(rest), few.y.bincount().tolist()
        (20, 1177, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    k = train.num_classes
    if int(labels) != labels or not k <= labels < len(train.y):
        raise GibbonInputError(f"vat: labels must be a whole number in [{k}, {len(train.y) - 1}] (one per class at "
                               f"least, some left unlabelled), got {labels!r}")
    gen = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in range(k):
        rows = torch.nonzero(train.y == c).flatten()
        want = int(labels) // k + (1 if c < int(labels) % k else 0)
        if len(rows) < want:
            raise GibbonInputError(f"vat: class {c} has {len(rows)} training images, fewer than the {want} "
                                   "labelled ones asked; lower labels")
        picked.append(rows[torch.randperm(len(rows), generator=gen)[:want]])
    chosen = torch.sort(torch.cat(picked)).values
    keep = torch.ones(len(train.y), dtype=torch.bool)
    keep[chosen] = False
    rest = torch.nonzero(keep).flatten()
    part = lambda rows, tag: dataclasses.replace(  # noqa: E731
        train, x=train.x[rows], y=train.y[rows], meta={**train.meta, "vat_rows": rows, "vat_part": tag})
    return part(chosen, "labelled"), part(rest, "unlabelled")


@register("vat")
@dataclass(frozen=True)
class VATTraining(DefenseConfig):
    """``--defense vat:eps=2.0`` (supervised) or ``vat:labels=100,eps=0.3`` (semi-supervised).

    ``labels=0`` trains on all of ``train`` with labels. ``labels=N > 0`` keeps the
    labels of a class-balanced subset of N training images (:func:`labelled_split`, seeded with
    ``split_seed``) and walks ``fit`` over the whole training set with its labels hidden:
    ``fit``'s epochs and ``batch_size`` are those of the unlabelled stream. ``alpha=0`` with
    ``labels=N`` is the labels-only baseline trained the same way.

    Example:
        >>> from gibbon.defenses.registry import parse_defense
        >>> parse_defense("vat:labels=100,eps=0.3").spec()
        'vat:alpha=1.0,eps=0.3,labelled_batch_size=64,labels=100,power_iterations=1,split_seed=0,xi=1e-06'
    """

    paper = "Miyato, Maeda, Koyama & Ishii 2018, arXiv:1704.03976"
    eps: float = 2.0
    xi: float = 1e-6
    power_iterations: int = 1
    alpha: float = 1.0
    labels: int = 0
    labelled_batch_size: int = 64
    split_seed: int = 0

    def objective(self, train):
        if int(self.labels) != self.labels or self.labels < 0:
            raise GibbonInputError(f"vat: labels must be a whole number >= 0 (0 = supervised), got {self.labels!r}")
        if not self.labels:
            return vat_objective(self.eps, self.xi, self.power_iterations, self.alpha)
        labelled, _ = labelled_split(train, self.labels, self.split_seed)
        return vat_semi_supervised_objective(labelled, eps=self.eps, xi=self.xi,
                                             power_iterations=self.power_iterations, alpha=self.alpha,
                                             labelled_batch_size=self.labelled_batch_size)

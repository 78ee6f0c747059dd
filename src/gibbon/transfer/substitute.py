"""Papernot et al.'s black-box attack: train a local substitute by querying the oracle, then
transfer white-box adversarial examples crafted on it (Papernot, McDaniel, Goodfellow, Jha,
Celik & Swami 2017, "Practical Black-Box Attacks against Machine Learning", arXiv:1602.02697).

Threat model: black-box, *labels only*. The adversary knows neither the weights nor the
architecture nor the training data of the oracle; it holds a small seed set (150 images in the
paper) and can ask for labels. Algorithm 1 of the paper:

1. label the current substitute set ``S_rho`` with the oracle (only its new points are queried);
2. train the substitute ``F`` on it;
3. *Jacobian-based dataset augmentation* (eq. 4): ``S_{rho+1} = S_rho ∪ {x + lambda_rho *
   sign(dF_{O(x)}(x)/dx)}``, the step along the gradient of the substitute's output for the
   oracle's label, clipped into the box; ``lambda_rho = lambda * (-1)^floor(rho / tau)``, the
   periodic sign flip of section 5 ("periodic step size");
4. after the last substitute epoch ``rho``, craft with any white-box attack on ``F`` and send to
   the oracle.

Two readings of the paper matter here (measured in ``docs/reproduction.md``):

* ``F`` is the substitute's output *probability* vector, as the paper writes its DNNs, so the
  augmentation follows the gradient of ``log F_{O(x)}``, which has the sign of
  ``dF_{O(x)}/dx`` and does not underflow where ``F`` saturates, rather than the gradient of
  one logit (``jacobian="logit"``, as some ports do);
* ``rho`` counts augmentations: the paper's substitute epochs start at ``rho = 0``, the seeds
  alone, so its ``rho = 6`` substitute is trained on ``S_6``, 2^6 times the seed set (9,600
  points from 150 seeds; MetaMind's 6,400 labels are 2^6 x 100), with seven trainings in all.
  CleverHans' tutorial counts trainings instead (``data_aug=6``: five augmentations, 4,800
  points). With both readings the MNIST substitute reaches the paper's 81.20% test accuracy.

*Reservoir sampling* (Papernot, McDaniel & Goodfellow 2016, "Transferability in Machine
Learning", arXiv:1605.07277, section 4.1): from round ``sigma`` on, only ``kappa`` randomly
chosen points of ``S_rho`` are augmented, so queries grow linearly instead of doubling.

*Shifted training copies* (``shift=``, not in the paper): each batch of the substitute's
training set is shown shifted by a few random pixels, with the labels the oracle gave the
unshifted points. The substitute learns that a digit moved by a pixel keeps its label without
paying a query for it, generalises from its few thousand labels much better (MNIST: 81% to
86% test accuracy at 9,600 labels) and its FGSM examples transfer much better (measured in
``docs/reproduction.md``).

Under a shared query budget (``Oracle(max_total=...)``, or a remote API's per-token budget seen
through :class:`~gibbon.oracles.HttpOracle`) the augmentation labels only what is left, keeping
back ``reserve`` queries, and training stops once nothing is left: the result says so
(``stopped_by_budget``) instead of failing on the budget.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.data.augment import check_shift, shift_objective
from gibbon.oracles import as_oracle
from gibbon.transfer._batches import craft, fooled_rate, predicted_labels


@dataclass
class SubstituteResult:
    """What the substitute attack cost and achieved (:func:`substitute_attack`)."""

    substitute: torch.nn.Module
    queries: int  # labels asked of the oracle while training the substitute
    training_points: int  # size of the final substitute training set
    history: list = field(default_factory=list)  # per round: points, queries, seconds
    substitute_accuracy: float | None = None  # on the evaluation set's true labels
    agreement: float | None = None  # substitute and oracle predict the same label
    oracle_accuracy: float | None = None  # oracle on the clean evaluation images
    adversarial_accuracy: float | None = None  # oracle on the transferred adversarial images
    transfer_success: float | None = None  # fraction of the oracle's correct images it now misclassifies
    attack_queries: int = 0  # labels asked to score the evaluation (clean and adversarial)
    stopped_by_budget: bool = False  # the oracle's shared budget cut the augmentation short

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "substitute"}


JACOBIANS = ("probability", "logit")


def check_jacobian(jacobian: str) -> None:
    if jacobian not in JACOBIANS:
        raise GibbonInputError(f"jacobian must be one of {', '.join(JACOBIANS)}, got {jacobian!r}")


def jacobian_augmentation(substitute, x: torch.Tensor, labels: torch.Tensor, step: float, bounds, *,
                          jacobian: str = "probability") -> torch.Tensor:
    """Eq. 4: ``x + step * sign(d F_label(x) / dx)``, clipped into ``bounds`` (new points only).

    ``jacobian="probability"``: ``F`` is the softmax output, differentiated through its log (the
    same sign, without underflow); ``"logit"``: ``F`` is the substitute's raw output.
    """
    check_jacobian(jacobian)
    x_var = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = substitute(x_var)
        if jacobian == "probability":
            out = torch.log_softmax(out, dim=1)
        (grad,) = torch.autograd.grad(out.gather(1, labels[:, None]).sum(), x_var)
    return (x + step * grad.sign()).clamp(*bounds).detach()


def train_substitute(oracle, seed_x: torch.Tensor, substitute: torch.nn.Module, *, rounds: int = 6,
                     step: float = 0.1, flip_every: int = 3, epochs: int = 10, batch_size: int = 128,
                     lr: float = 1e-3, optimizer: str = "adam", reservoir_from: int | None = None,
                     reservoir_size: int = 400, bounds=(0.0, 1.0), classes=None, seed: int = 0, progress: bool = False,
                     query_batch: int = 512, first_sign: int = 1, jacobian: str = "probability",
                     shift: int = 0, reserve: int = 0, restart: bool = False) -> SubstituteResult:
    """Algorithm 1 of Papernot et al. 2017: substitute training with Jacobian-based augmentation.

    Args:
        oracle: the black box (an Oracle or any model, wrapped in one); only its top-1 labels are used.
        seed_x: the adversary's initial images ``(N, C, H, W)`` (paper: 150 test images).
        substitute: a freshly built model (its architecture is the adversary's guess).
        rounds: rho, the paper's substitute epochs (paper: 6): the set is augmented ``rounds``
            times, so the substitute is trained ``rounds + 1`` times, the last time on
            ``2**rounds`` times the seeds (0: the seeds alone).
        step: lambda, the augmentation step (paper: 0.1).
        flip_every: tau, rounds between sign flips of lambda (paper: 3); 0 disables the flip.
        first_sign: the sign of lambda before the first flip (+1: the first steps raise the
            substitute's score of the oracle's label; CleverHans' tutorial starts at -1).
        jacobian: ``"probability"`` (the paper's ``F``) or ``"logit"``; see :func:`jacobian_augmentation`.
        epochs, batch_size, lr, optimizer: substitute training per round, as :func:`gibbon.zoo.fit`
            (default: 10 epochs of Adam at 1e-3, batch 128, as CleverHans' tutorial).
        shift: train on copies of each batch shifted by up to ``shift`` pixels
            (:func:`gibbon.data.augment.random_shift`, filled with the box's lower bound), the
            adversary's prior that a slightly moved image keeps its label. It asks no queries
            and leaves the augmentation's points unshifted. 0 (the default): the paper's
            Algorithm 1 as written. On 28x28 MNIST, 2 cuts the oracle's accuracy on the
            transferred FGSM examples by 8 to 12 points against each of three CNN oracles (1 does
            as well against the one tried, 3 hardly helps; ``docs/reproduction.md``). On the 8x8
            digits 1 is already too coarse.
        reservoir_from: sigma, the first round of reservoir sampling (None: always double).
        reservoir_size: kappa, points augmented per round once reservoir sampling is on.
        bounds: input box. classes: class names (default: ``0..K-1`` from the first answer).
        seed: training order and reservoir choices.
        reserve: queries of the oracle's shared budget kept back for the caller (say, to score
            the transferred examples); the augmentation never spends them.
        restart: train every round from the substitute's initial weights instead of continuing
            from the last round's (section 4.1 of the paper: "trained for 10 epochs from
            scratch"). False (the default): training continues, as CleverHans' tutorial.

    Returns:
        :class:`SubstituteResult` with the trained substitute, the labels asked and the history.
    """
    from gibbon import zoo
    from gibbon.data import Dataset

    if rounds < 0 or epochs < 1 or step <= 0 or len(seed_x) == 0:
        raise GibbonInputError("train_substitute needs rounds >= 0, epochs >= 1, step > 0 and seed images")
    check_jacobian(jacobian)
    objective = shift_objective(shift, fill=float(bounds[0])) if check_shift(shift) else None
    oracle = as_oracle(oracle)
    generator = torch.Generator().manual_seed(seed)
    start_total = oracle.total
    if (left := oracle.total_remaining() - reserve) < len(seed_x):
        raise GibbonInputError(f"the oracle's budget has {max(left, 0)} queries left after the {reserve} kept back, "
                               f"fewer than the {len(seed_x)} seed images to label; use fewer seed images or a "
                               "larger budget")
    initial = copy.deepcopy(substitute.state_dict()) if restart else None
    points = seed_x.detach().clone()
    labels = predicted_labels(oracle, points, query_batch)
    if classes is None:
        with torch.no_grad():
            num_classes = int(substitute(points[:1]).shape[1])
        classes = tuple(str(i) for i in range(num_classes))
    history, stopped = [], False
    for rho in range(rounds + 1):  # train on S_0 .. S_rounds
        t0 = time.perf_counter()
        data = Dataset("substitute", "train", points, labels, tuple(classes), tuple(bounds))
        if initial is not None:
            substitute.load_state_dict(initial)
        zoo.fit(substitute, data, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                objective=objective, seed=seed + rho, progress=progress)
        substitute.eval()
        history.append({"round": rho, "points": len(points), "queries": oracle.total - start_total,
                        "seconds": time.perf_counter() - t0})
        if rho == rounds:
            break
        affordable = oracle.total_remaining() - reserve
        if affordable <= 0:  # the shared budget is spent: stop with the substitute trained so far
            stopped = True
            break
        lam = first_sign * step * ((-1) ** (rho // flip_every) if flip_every else 1)  # periodic step size
        chosen = torch.arange(len(points))
        if reservoir_from is not None and rho >= reservoir_from:
            chosen = torch.randperm(len(points), generator=generator)[:reservoir_size]
        new = jacobian_augmentation(substitute, points[chosen], labels[chosen], lam, bounds, jacobian=jacobian)
        stopped = len(new) > affordable  # the budget pays for only the first new points
        new = new[:affordable]
        points = torch.cat([points, new])
        labels = torch.cat([labels, predicted_labels(oracle, new, query_batch)])  # only the new points cost queries
    return SubstituteResult(substitute=substitute, queries=oracle.total - start_total, training_points=len(points),
                            history=history, stopped_by_budget=stopped)


def substitute_attack(oracle, seed_x: torch.Tensor, substitute: torch.nn.Module, eval_x: torch.Tensor,
                      eval_y: torch.Tensor, attack, *, eps: float | None = None, norm: str = "linf",
                      eval_batch_size: int = 500, generator_seed: int = 0, **training) -> SubstituteResult:
    """Train a substitute (:func:`train_substitute`), craft ``attack`` on it, send it to the oracle.

    Args:
        oracle: the black box. seed_x: the adversary's seed images. substitute: a fresh model.
        eval_x, eval_y: images to attack and their true labels (disjoint from ``seed_x``).
        attack: any white-box attack ``attack(model, x, y, eps=, norm=, bounds=, generator=)``,
            e.g. ``FGSM()`` (the paper: FGSM at eps 0.3).
        eps, norm: the attack's budget. eval_batch_size: images per crafting / query batch.
        **training: arguments of :func:`train_substitute`.

    Returns:
        :class:`SubstituteResult` with the substitute's accuracy and agreement with the oracle on
        ``eval_x``, the oracle's clean and adversarial accuracy and the transfer success rate
        (fraction of the images the oracle gets right whose adversarial version it gets wrong).

    Example:
        >>> from gibbon.attacks import FGSM
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> sub = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.rand(20, 1, 2, 2)
        >>> result = substitute_attack(net, x[:10], sub, x[10:], net(x[10:]).argmax(1), FGSM(), eps=0.1,
        ...                            rounds=1, epochs=1)
        >>> result.queries, result.training_points
        (20, 20)
    """
    oracle = as_oracle(oracle)
    bounds = training.get("bounds", (0.0, 1.0))
    # scoring asks the oracle twice per evaluation image (clean and transferred): keep that back
    result = train_substitute(oracle, seed_x, substitute, reserve=2 * len(eval_x), **training)
    before = oracle.total
    sub = result.substitute
    sub_pred = predicted_labels(sub, eval_x, eval_batch_size)
    oracle_pred = predicted_labels(oracle, eval_x, eval_batch_size)
    adv = craft(sub, attack, eval_x, eval_y, eps=eps, norm=norm, bounds=bounds, batch_size=eval_batch_size,
                seed=generator_seed)
    adv_pred = predicted_labels(oracle, adv, eval_batch_size)
    correct = oracle_pred == eval_y
    result.substitute_accuracy = float((sub_pred == eval_y).float().mean())
    result.agreement = float((sub_pred == oracle_pred).float().mean())
    result.oracle_accuracy = float(correct.float().mean())
    result.adversarial_accuracy = float((adv_pred == eval_y).float().mean())
    result.transfer_success = fooled_rate(adv_pred, eval_y, correct)
    result.attack_queries = oracle.total - before
    return result

"""The likelihood-ratio membership attack LiRA (Carlini, Chien, Nasr, Song, Terzis & Tramèr 2022,
"Membership Inference Attacks From First Principles", arXiv:2112.03570).

Threat model: black box that answers scores (logits or probabilities), attacker with data from
the target's distribution and its training recipe. Membership of one example ``(x, y)`` is a
hypothesis test between "the model was trained with it" and "without it":

1. Train ``N`` shadow models on random halves of a pool (:func:`gibbon.privacy.shadow.train_shadows`),
   so every example is IN for ``N/2`` of them and OUT for the rest (section IV, Algorithm 1).
2. Per example, the shadows' logit-scaled confidences ``phi = log(p_y / (1 - p_y))`` (section
   IV.B: the scaling makes them close to Gaussian) give ``N(mu_in, s_in^2)`` and ``N(mu_out, s_out^2)``.
3. Query the target on the example (and its augmented copies: section VI.B) and score
   * **online**: ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)`` (Algorithm 1, line 20);
   * **offline**: ``log Pr[Z < phi]``, ``Z ~ N(mu_out, s_out^2)``, a one-sided test against the OUT
     models only (section VI.C), so no shadow needs the target example.
   Augmented queries are fitted per view and their log-scores averaged.
   ``global_variance`` uses one variance per view, pooled over all examples (section VI.A: better
   with few shadows, the authors' "fixed variance"); otherwise each example's own.

Evaluation protocol here: the target is trained on a known random half of the same pool, and is
not one of the shadows; :func:`lira_leave_one_out` instead takes one shadow as the target and
the others as shadows (the paper's protocol, its N + 1 models used in turn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.privacy.shadow import ShadowScores, check_members, query_pool

MIN_VARIANCE = 1e-8  # a shadow set that answers one phi for an example would otherwise divide by zero
PAPER = "Carlini et al. 2022, arXiv:2112.03570"


def _fit(phi: torch.Tensor, mask: torch.Tensor, *, global_variance: bool, which: str):
    """Mean ``[n, A]`` and variance (``[A]`` pooled, or ``[n, A]``) of ``phi [N, n, A]`` over the
    models where ``mask [N, n]`` holds."""
    m = mask[..., None].double()
    count = m.sum(0)  # [n, 1]
    mean = (phi * m).sum(0) / count.clamp_min(1)
    squares = ((phi - mean) ** 2 * m).sum(0)  # [n, A], deviations from each example's own mean
    if global_variance:
        dof = float((count - 1).clamp_min(0).sum())
        if dof < 1:
            raise GibbonInputError(f"the pooled {which} variance needs some example {which.upper()} of 2 or more "
                                   "shadows; train at least 4 shadows")
        return mean, (squares.sum(0) / dof).clamp_min(MIN_VARIANCE)
    if bool((count < 2).any()):
        raise GibbonInputError(f"per-example variances need every example {which.upper()} of at least 2 shadows "
                               f"({int((count < 2).sum())} are not); train at least 4 shadows or use "
                               "global_variance=True")
    return mean, (squares / (count - 1)).clamp_min(MIN_VARIANCE)


def _log_normal(value, mean, var):
    return -0.5 * ((value - mean) ** 2 / var + torch.log(2 * math.pi * var))


def lira_scores(observed: torch.Tensor, shadows: ShadowScores, *, online: bool = True,
                global_variance: bool = True, exclude: int | None = None) -> torch.Tensor:
    """LiRA's membership score ``[n]`` (higher: more likely a member) of the target's
    ``observed`` confidences ``phi [n, A]`` (:func:`~gibbon.privacy.shadow.query_pool`).

    ``exclude``: leave shadow ``exclude`` out of the fit (it is the target in leave-one-out).

    Example:
        >>> keep = torch.tensor([[True, False], [False, True], [True, False], [False, True]])
        >>> phi = torch.tensor([[[5.0], [0.0]], [[1.0], [4.0]], [[6.0], [1.0]], [[0.0], [5.0]]])
        >>> s = lira_scores(torch.tensor([[5.5], [0.5]]), ShadowScores(phi, torch.ones(4, 2, 2) / 2, keep))
        >>> bool(s[0] > 0 > s[1])
        True
    """
    phi, keep = shadows.phi.double(), shadows.keep.bool()
    if exclude is not None:
        rest = torch.arange(shadows.n_shadows) != int(exclude)
        phi, keep = phi[rest], keep[rest]
    if len(keep) < 2:
        raise GibbonInputError(f"LiRA needs at least 2 shadows (4 or more to fit variances, 16-64 for good "
                               f"low-FPR results), got {len(keep)}")
    observed = torch.as_tensor(observed).double()
    if observed.shape != phi.shape[1:]:
        raise GibbonInputError(f"observed confidences must be [examples, views] = {tuple(phi.shape[1:])} like the "
                               f"shadows', got {tuple(observed.shape)}; query the target on the same pool and views")
    if not bool(torch.isfinite(observed).all()):
        raise GibbonInputError("the target's confidences hold NaN or infinite values; check the model or the API")
    out_mean, out_var = _fit(phi, ~keep, global_variance=global_variance, which="out")
    if not online:
        # one-sided: a member's phi sits above the OUT distribution (section VI.C)
        return torch.special.log_ndtr((observed - out_mean) / out_var.sqrt()).mean(1)
    missing = int(((keep.sum(0) == 0) | ((~keep).sum(0) == 0)).sum())
    if missing:
        raise GibbonInputError(f"online LiRA needs every example IN and OUT of some shadow, {missing} are not; train "
                               ">= 2 shadows with train_shadows' balanced halves, or use online=False")
    in_mean, in_var = _fit(phi, keep, global_variance=global_variance, which="in")
    return (_log_normal(observed, in_mean, in_var) - _log_normal(observed, out_mean, out_var)).mean(1)


def attack_name(online: bool, global_variance: bool) -> str:
    variance = "global" if global_variance else "per-example"
    return f"LiRA {'online' if online else 'offline'}, {variance} variance ({PAPER})"


def lira_attack(target, x: torch.Tensor, y: torch.Tensor, shadows: ShadowScores, members: torch.Tensor, *,
                online: bool = True, global_variance: bool = True, batch_size: int = 500, fill: float = 0.0,
                observed: torch.Tensor | None = None):
    """LiRA against ``target`` (a torch model or an Oracle), evaluated on the shadows' pool.

    Args:
        target: callable ``x -> scores``; queried ``len(x) * len(shadows.views)`` times, in
            batches, under no_grad.
        x, y: the pool the shadows were trained on (checked by fingerprint).
        members: ``bool [n]``, True where the target trained on the example.
        online / global_variance: see the module docstring.
        fill: the value of pixels shifted in by the query views (the background).
        observed: the target's ``phi`` from an earlier call (``query_pool``), to score online and
            offline on one set of queries; then ``target`` is not queried.

    Returns:
        :class:`~gibbon.privacy.membership.MembershipResult` with ``attack`` naming the variant.

    Example:
        >>> shadows = train_shadows(zoo_trainer("mlp-200-200", train, epochs=20), x, y, n_shadows=16,
        ...                         views=shift_views(1))  # doctest: +SKIP
        >>> lira_attack(Oracle(target), x, y, shadows, members).tpr_at_fpr["0.001"]  # doctest: +SKIP
    """
    from gibbon.privacy.membership import roc_summary

    shadows.check(x, y)
    members = check_members(members, len(x))
    if observed is None:
        observed = query_pool(target, x, y, views=shadows.views, batch_size=batch_size, fill=fill)
    scores = lira_scores(observed, shadows, online=online, global_variance=global_variance)
    return replace(roc_summary(scores[members].numpy(), scores[~members].numpy()),
                   attack=attack_name(online, global_variance))


def lira_leave_one_out(shadows: ShadowScores, index: int, *, online: bool = True, global_variance: bool = True):
    """The paper's protocol: shadow ``index``'s saved answers are the target's, its training half
    the members, and the other ``N - 1`` shadows the attacker's. No queries."""
    if not 0 <= int(index) < shadows.n_shadows:
        raise GibbonInputError(f"index must pick one of the {shadows.n_shadows} shadows, got {index!r}")
    from gibbon.privacy.membership import roc_summary

    shadows.check()
    members = check_members(shadows.keep[int(index)], shadows.keep.shape[1])
    scores = lira_scores(shadows.phi[int(index)], shadows, online=online, global_variance=global_variance,
                         exclude=int(index))
    return replace(roc_summary(scores[members].numpy(), scores[~members].numpy()),
                   attack=attack_name(online, global_variance))


@dataclass(frozen=True)
class LiRA:
    """``LiRA(online=True, global_variance=True)(target, x, y, shadows, members)``: :func:`lira_attack`."""

    online: bool = True
    global_variance: bool = True
    batch_size: int = 500

    def __call__(self, target, x, y, shadows, members, **kwargs):
        return lira_attack(target, x, y, shadows, members, online=self.online, global_variance=self.global_variance,
                           batch_size=self.batch_size, **kwargs)


__all__ = ["LiRA", "lira_scores", "lira_attack", "lira_leave_one_out", "attack_name"]

"""Shadow models for membership inference (Shokri, Stronati, Song & Shmatikov 2017, "Membership
Inference Attacks Against Machine Learning Models", arXiv:1610.05820).

Threat model: black box that answers scores (a torch model, an :class:`gibbon.oracles.Oracle`,
a served API through :class:`~gibbon.oracles.HttpOracle`), and an attacker who holds data from
the target's distribution and knows (or guesses) its training recipe. The attacker trains ``k``
*shadow models* on halves of that data, so it knows which examples each shadow saw, and learns
from the shadows what a member's answer looks like.

This module holds what every shadow-model attack shares, and Shokri et al.'s attack itself:

* :func:`train_shadows`: ``N`` shadows on random halves of a *pool*, each example IN for
  exactly ``N // 2`` of them (as Carlini et al. 2022, arXiv:2112.03570, section VI.A, so that
  LiRA has IN and OUT models of every example). Each shadow's answers on the whole pool are
  saved (npz, never pickle) as it finishes, so a rerun skips the ones already done.
* :func:`shadow_attack`: section IV.C-D of Shokri et al.: one attack classifier per class,
  trained on the shadows' prediction vectors labelled in/out, applied to the target's answers.

The attacker's pool here may overlap the target's training data (that is the evaluation: the
target is trained on a known half of the same pool); Shokri et al.'s attack learns a per-class
rule, not per example, so this only matters for LiRA (:mod:`gibbon.privacy.lira`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError, check_finite, check_labels
from gibbon.oracles.base import requires_scores, to_probabilities

#: A query view is ``(flip, dy, dx)``: mirror left-right, then shift down ``dy`` / right ``dx`` pixels.
IDENTITY = ((False, 0, 0),)
TINY = 1e-45  # the smallest float32 probability: a rounded 0 still gives a finite log
SHOKRI = "shadow models (Shokri et al. 2017, arXiv:1610.05820)"


def shift_views(max_shift: int = 1, *, flip: bool = False) -> tuple:
    """The identity first, then every whole-pixel shift up to ``max_shift`` (and their mirror
    images with ``flip``): LiRA's query augmentations (Carlini et al. 2022, section VI.B).

    Example:
        >>> len(shift_views(1)), shift_views(1)[0], len(shift_views(1, flip=True))
        (9, (False, 0, 0), 18)
    """
    if isinstance(max_shift, bool) or int(max_shift) != max_shift or max_shift < 0:
        raise GibbonInputError(f"max_shift must be a whole number of pixels >= 0, got {max_shift!r}")
    steps = range(-int(max_shift), int(max_shift) + 1)
    views = [(f, dy, dx) for f in ((False, True) if flip else (False,)) for dy in steps for dx in steps]
    return tuple(sorted(views, key=lambda v: (v[0], abs(v[1]) + abs(v[2]), v)))


def apply_view(x: torch.Tensor, view, *, fill: float = 0.0) -> torch.Tensor:
    """``x`` (N, C, H, W) seen through ``view`` = ``(flip, dy, dx)``; pixels shifted in are ``fill``."""
    flip, dy, dx = bool(view[0]), int(view[1]), int(view[2])
    if flip:
        x = x.flip(-1)
    if dy == dx == 0:
        return x
    if x.ndim != 4:
        raise GibbonInputError(f"shifted query views need images (N, C, H, W), got shape {tuple(x.shape)}")
    s = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (s, s, s, s), value=fill)
    return padded[..., s - dy:s - dy + h, s - dx:s - dx + w]  # out[i] = x[i - dy]


def logit_confidence(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini et al.'s statistic ``phi = log(p_y / (1 - p_y))`` per row, in float64.

    From logits it is ``z_y - logsumexp_{j != y} z_j`` (no softmax, so no rounding to ``p_y = 1``
    for a confident model). From probabilities (``to_probabilities`` semantics: non-negative rows
    summing to 1) ``1 - p_y`` is the sum of the other classes, exact where ``p_y`` rounds to 1.

    Example:
        >>> logit_confidence(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).tolist()
        [2.0]
        >>> round(logit_confidence(torch.tensor([[0.75, 0.25]]), torch.tensor([0])).item(), 4)
        1.0986
    """
    scores = requires_scores(scores, "membership inference")
    other = torch.ones_like(scores, dtype=torch.bool).scatter_(1, y[:, None].to(scores.device), False)
    if to_probabilities(scores) is scores:  # the same test every gibbon privacy attack applies
        p = scores.double()
        p_y = p.gather(1, y[:, None].to(p.device)).squeeze(1)
        return p_y.clamp_min(TINY).log() - p.masked_fill(~other, 0.0).sum(1).clamp_min(TINY).log()
    z = scores.double()
    return z.gather(1, y[:, None].to(z.device)).squeeze(1) - z.masked_fill(~other, -math.inf).logsumexp(1)


def _device(model):
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    return params[0].device if params else torch.device("cpu")


def check_pool(x, y) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise GibbonInputError("the pool must be float inputs x (N, ...); pass dataset.x")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
        raise GibbonInputError(f"the pool has {len(x)} inputs but labels of shape {tuple(getattr(y, 'shape', ()))}; "
                               "pass one label per input")
    check_finite(x)
    check_labels(y, None)


def query_pool(model, x, y, *, views=IDENTITY, batch_size: int = 500, fill: float = 0.0, probs: bool = False,
               device=None):
    """``phi [n, len(views)]`` (float64) of ``model`` on the pool, and with ``probs`` also the
    identity view's probability vectors ``[n, K]`` (float32; an extra view if the identity is not
    in ``views``). ``model`` is only ever called as ``model(batch)``, under no_grad: one query per
    row, so an Oracle counts ``n * len(views)`` (plus ``n`` for the extra view)."""
    check_pool(x, y)
    device = device if device is not None else _device(model)
    views = tuple(tuple(v) for v in views)
    asked = views if not probs or views[:1] == IDENTITY else IDENTITY + views
    skip = len(asked) - len(views)  # 1 where the identity view was added for the probabilities only
    phis, vectors = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size].long()
            row = []
            for k, view in enumerate(asked):
                scores = requires_scores(model(apply_view(xb, view, fill=fill).to(device)), "membership inference")
                scores = scores.detach().cpu()
                if not bool(torch.isfinite(scores).all()):
                    raise GibbonInputError(f"the model answered NaN or infinite scores for inputs {i}-{i + len(xb) - 1}"
                                           "; check the model (or the API) before attacking it")
                check_labels(yb, scores.shape[1])
                if probs and k == 0:
                    vectors.append(to_probabilities(scores.float()))
                if k >= skip:
                    row.append(logit_confidence(scores, yb))
            phis.append(torch.stack(row, 1) if row else torch.zeros(len(xb), 0, dtype=torch.float64))
    phi = torch.cat(phis)
    return (phi, torch.cat(vectors)) if probs else phi


def pool_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of the pool, stored with shadow scores so they are never scored on another pool."""
    digest = hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().long().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def balanced_keep(n_shadows: int, n: int, *, seed: int = 0) -> torch.Tensor:
    """``bool [n_shadows, n]``: each example IN for exactly ``n_shadows // 2`` shadows, chosen at
    random (each shadow then trains on about half of the pool)."""
    gen = torch.Generator().manual_seed(int(seed))
    rank = torch.rand(n_shadows, n, generator=gen).argsort(0).argsort(0)  # a random order of the models per example
    return rank < n_shadows // 2


@dataclass(frozen=True)
class ShadowScores:
    """What the shadows answered on the pool, and which examples each trained on.

    Attributes:
        phi: ``[N, n, A]`` float64, :func:`logit_confidence` per shadow, example and query view.
        probs: ``[N, n, K]`` float32, the identity view's probability vectors (Shokri's features).
        keep: ``bool [N, n]``, True where the shadow trained on the example (IN).
        views: the ``A`` query views, ``(flip, dy, dx)`` each.
        pool: :func:`pool_fingerprint` of the pool.
    """

    phi: torch.Tensor
    probs: torch.Tensor
    keep: torch.Tensor
    views: tuple = IDENTITY
    pool: str = ""

    @property
    def n_shadows(self) -> int:
        return int(self.keep.shape[0])

    def check(self, x=None, y=None) -> "ShadowScores":
        """Consistent shapes, finite scores, and (given ``x``, ``y``) the pool they were scored on."""
        n_models, n = self.keep.shape
        if self.phi.shape != (n_models, n, len(self.views)) or self.probs.shape[:2] != (n_models, n):
            raise GibbonInputError(f"shadow scores are inconsistent: phi {tuple(self.phi.shape)}, probs "
                                   f"{tuple(self.probs.shape)}, keep {tuple(self.keep.shape)}; recompute them")
        if not bool(torch.isfinite(self.phi).all()) or not bool(torch.isfinite(self.probs).all()):
            raise GibbonInputError("shadow scores hold NaN or infinite values; retrain the shadows that produced them")
        if x is not None:
            check_pool(x, y)
            if len(x) != n:
                raise GibbonInputError(f"the shadow scores cover {n} examples but the pool has {len(x)}; pass the "
                                       "pool the shadows were trained on")
            if self.pool and self.pool != pool_fingerprint(x, y):
                raise GibbonInputError("these shadow scores were computed on another pool (fingerprint differs); "
                                       "pass the same inputs and labels, in the same order")
        return self


def _seed_of(seed: int, i: int) -> int:
    return int(seed) * 100_003 + i  # distinct for every (run seed, shadow) pair a user is likely to try


def train_shadows(train_shadow, x: torch.Tensor, y: torch.Tensor, *, n_shadows: int, seed: int = 0,
                  views=IDENTITY, out_dir=None, batch_size: int = 500, fill: float = 0.0,
                  progress: bool = True) -> ShadowScores:
    """Train ``n_shadows`` models on balanced random halves of the pool ``(x, y)`` and score them.

    Args:
        train_shadow: ``train_shadow(x, y, seed) -> model``, any recipe (e.g. :func:`zoo_trainer`,
            DP-SGD included). It should mirror the target's training as closely as the attacker can.
        n_shadows: at least 2 (online LiRA with a fitted variance needs 4 or more).
        seed: draws the halves (:func:`balanced_keep`) and each shadow's training seed.
        views: query views each shadow is scored on (:func:`shift_views`); the target is queried
            on the same ones.
        out_dir: if given, shadow ``i`` is written to ``out_dir/shadow-{i:03d}.npz`` when done,
            and a rerun loads it instead of training it again.

    Returns:
        :class:`ShadowScores`, also written to ``out_dir/shadows.npz`` when ``out_dir`` is given.
    """
    if isinstance(n_shadows, bool) or int(n_shadows) != n_shadows or n_shadows < 2:
        raise GibbonInputError(f"shadow-model attacks need at least 2 shadows (4 or more for online LiRA, 16-64 "
                               f"for good low-FPR results), got n_shadows={n_shadows!r}")
    check_pool(x, y)
    views = tuple(tuple(int(v) if i else bool(v) for i, v in enumerate(view)) for view in views)
    keep, fingerprint = balanced_keep(int(n_shadows), len(x), seed=seed), pool_fingerprint(x, y)
    out = Path(out_dir) if out_dir is not None else None
    phis, vectors, start = [], [], time.perf_counter()
    for i in range(int(n_shadows)):
        path = out / f"shadow-{i:03d}.npz" if out is not None else None
        if path is not None and path.exists():
            one = load_shadow_scores(path)
            if one.pool != fingerprint or one.views != views or not torch.equal(one.keep[0], keep[i]):
                raise GibbonInputError(f"{path} is from another run (pool, views, seed or number of shadows "
                                       "differ); delete it or use another out_dir")
            what = "loaded"
        else:
            t0 = time.perf_counter()
            model = train_shadow(x[keep[i]], y[keep[i]], _seed_of(seed, i))
            if hasattr(model, "eval"):
                model.eval()
            phi, probs = query_pool(model, x, y, views=views, batch_size=batch_size, fill=fill, probs=True)
            one = ShadowScores(phi[None], probs[None], keep[i][None], views, fingerprint)
            if path is not None:
                save_shadow_scores(path, one)
            what = f"trained in {time.perf_counter() - t0:.1f} s"
        phis.append(one.phi[0])
        vectors.append(one.probs[0])
        if progress:
            print(f"shadow {i + 1}/{n_shadows}: {what} ({int(keep[i].sum())} examples IN; "
                  f"{time.perf_counter() - start:.0f} s so far)", flush=True)
    result = ShadowScores(torch.stack(phis), torch.stack(vectors), keep, views, fingerprint).check()
    if out is not None:
        save_shadow_scores(out / "shadows.npz", result)
    return result


def save_shadow_scores(path, shadows: ShadowScores) -> Path:
    """Write ``shadows`` to ``path`` (npz: plain arrays, no pickle) through a temp file and ``os.replace``."""
    from gibbon.zoo.io import write_npz_atomic

    arrays = {"phi": shadows.phi.double().numpy(), "probs": shadows.probs.float().numpy(),
              "keep": shadows.keep.bool().numpy(), "views": np.asarray(shadows.views, dtype=np.int64).reshape(-1, 3),
              "pool": np.asarray(shadows.pool), "format": np.asarray("gibbon-shadow-scores/1")}
    return write_npz_atomic(path, arrays)


def load_shadow_scores(path) -> ShadowScores:
    """Read what :func:`save_shadow_scores` wrote (``allow_pickle=False``: a file cannot run code)."""
    try:
        with np.load(Path(path), allow_pickle=False) as f:
            if str(f["format"]) != "gibbon-shadow-scores/1":
                raise KeyError("format")
            views = tuple((bool(v[0]), int(v[1]), int(v[2])) for v in f["views"])
            shadows = ShadowScores(torch.from_numpy(f["phi"].copy()), torch.from_numpy(f["probs"].copy()),
                                   torch.from_numpy(f["keep"].copy()), views, str(f["pool"]))
    except (OSError, KeyError, ValueError) as e:
        raise GibbonInputError(f"cannot read shadow scores from {path} ({e}); delete it and recompute") from None
    return shadows.check()


def _train_zoo(x, y, seed, *, arch, dataset, epochs, batch_size, lr, optimizer, dp):
    from gibbon import zoo

    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's RNG untouched
        torch.manual_seed(int(seed))
        model = zoo.build(arch, dataset)
    train = replace(dataset, x=x, y=y, meta={})
    common = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=int(seed), progress=False)
    if dp is not None:
        from gibbon.defenses.dp_sgd import train_dp

        train_dp(model, train, **dp, **common)
    else:
        zoo.fit(model, train, **common)
    return model.eval()


def zoo_trainer(arch: str, dataset, *, epochs: int, batch_size: int = 128, lr: float = 1e-3,
                optimizer: str = "adam", dp: dict | None = None):
    """A ``train_shadow(x, y, seed)`` for :func:`train_shadows`: ``gibbon.zoo.build(arch, dataset)``
    (weights seeded by ``seed``) trained by :func:`gibbon.zoo.fit`, or by DP-SGD
    (:func:`gibbon.defenses.dp_sgd.train_dp`) with ``dp`` as its privacy keywords, e.g.
    ``{"epsilon": 3, "delta": 1e-5, "clip": 1.0}``. ``dataset`` gives shapes and class names."""
    return functools.partial(_train_zoo, arch=arch, dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                             optimizer=optimizer, dp=dict(dp) if dp else None)


# --- Shokri et al.'s attack classifiers -------------------------------------------------------


def attack_features(probs: torch.Tensor, *, features: str = "sorted") -> torch.Tensor:
    """The attack classifier's input: log-probabilities, sorted (largest first; Shokri et al.'s
    attack is per class, and sorting makes it depend on confidence, not on which wrong class) or
    in class order (``"full"``, the paper's raw vector). The log only spreads out values near 0/1."""
    if features not in ("sorted", "full"):
        raise GibbonInputError(f"features must be 'sorted' or 'full', got {features!r}")
    logp = probs.double().clamp_min(TINY).log()
    return logp.sort(1, descending=True).values if features == "sorted" else logp


@dataclass(frozen=True)
class AttackModels:
    """One logistic-regression-on-MLP attack classifier per class (index = class), with the
    feature standardisation each was trained with."""

    nets: tuple
    mean: torch.Tensor
    std: torch.Tensor
    features: str = "sorted"

    def scores(self, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Membership logits ``[n]`` (higher: member) of answers ``probs`` with true labels ``y``."""
        feats = attack_features(probs, features=self.features).float()
        out = torch.zeros(len(y), dtype=torch.float64)
        with torch.no_grad():
            for c, net in enumerate(self.nets):
                rows = y == c
                if rows.any():
                    out[rows] = net((feats[rows] - self.mean[c]) / self.std[c]).squeeze(1).double()
        return out


def fit_attack_models(shadows: ShadowScores, y: torch.Tensor, *, features: str = "sorted", hidden: int = 64,
                      steps: int = 300, lr: float = 1e-2, seed: int = 0) -> AttackModels:
    """Shokri et al. section IV.D: per class ``c``, a binary classifier of (shadow answer on an
    example of class ``c``) -> (was it in that shadow's training set?), over all shadows. Here a
    one-hidden-layer MLP trained full-batch with Adam (the paper used a small net too)."""
    num_classes = int(shadows.probs.shape[2])
    check_labels(y, num_classes)
    nets, means, stds = [], [], []
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(int(seed))
        for c in range(num_classes):
            rows = (y == c).nonzero().squeeze(1)
            feats = attack_features(shadows.probs[:, rows].reshape(-1, num_classes), features=features).float()
            label = shadows.keep[:, rows].reshape(-1).float()
            mean, std = torch.zeros(num_classes), torch.ones(num_classes)
            if len(feats) > 1:
                mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
            net = torch.nn.Sequential(torch.nn.Linear(num_classes, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
            if len(feats):
                opt = torch.optim.Adam(net.parameters(), lr=lr)
                z = (feats - mean) / std
                for _ in range(int(steps)):
                    opt.zero_grad()
                    F.binary_cross_entropy_with_logits(net(z).squeeze(1), label).backward()
                    opt.step()
            nets.append(net.eval().requires_grad_(False))
            means.append(mean)
            stds.append(std)
    return AttackModels(tuple(nets), torch.stack(means), torch.stack(stds), features)


def shadow_attack(target, x: torch.Tensor, y: torch.Tensor, shadows: ShadowScores, members: torch.Tensor, *,
                  attack_models: AttackModels | None = None, features: str = "sorted", batch_size: int = 500,
                  seed: int = 0):
    """Shokri et al.'s attack on ``target``, evaluated on the pool: ``members[i]`` is True where
    the target trained on example ``i``. One query per example. Returns a
    :class:`~gibbon.privacy.membership.MembershipResult`.

    Example:
        >>> shadows = train_shadows(zoo_trainer("mlp-200-200", train, epochs=20), x, y, n_shadows=8)  # doctest: +SKIP
        >>> shadow_attack(target, x, y, shadows, members).auc  # doctest: +SKIP
    """
    from gibbon.privacy.membership import roc_summary

    shadows.check(x, y)
    members = check_members(members, len(x))
    models = attack_models or fit_attack_models(shadows, y, features=features, seed=seed)
    _, probs = query_pool(target, x, y, views=(), batch_size=batch_size, probs=True)
    scores = models.scores(probs, y)
    return replace(roc_summary(scores[members].numpy(), scores[~members].numpy()), attack=SHOKRI)


def check_members(members, n: int) -> torch.Tensor:
    members = torch.as_tensor(members)
    if members.dtype != torch.bool or members.shape != (n,):
        raise GibbonInputError(f"members must be a bool mask of the pool's {n} examples (True: the target trained "
                               f"on it), got {members.dtype} of shape {tuple(members.shape)}")
    if not bool(members.any()) or bool(members.all()):
        raise GibbonInputError("members must mark some examples True (members) and some False (non-members)")
    return members


__all__ = ["IDENTITY", "ShadowScores", "AttackModels", "shift_views", "apply_view", "logit_confidence", "query_pool",
           "pool_fingerprint", "balanced_keep", "train_shadows", "save_shadow_scores", "load_shadow_scores",
           "zoo_trainer", "attack_features", "fit_attack_models", "shadow_attack", "check_members"]

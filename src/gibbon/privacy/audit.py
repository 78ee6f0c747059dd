"""Empirical privacy auditing: a statistically valid *lower* bound on the epsilon of DP-SGD,
from membership tests on a canary (Jagielski, Ullman & Oprea 2020, "Auditing Differentially
Private Machine Learning: How Private is Private SGD?", arXiv:2006.07709; Nasr, Song, Thakurta,
Papernot & Carlini 2021, "Adversary Instantiation: Lower Bounds for Differentially Private
Machine Learning", arXiv:2101.04535; Nasr et al. 2023, "Tight Auditing of Differentially
Private Machine Learning", arXiv:2302.07956).

The accountant gives an upper bound: the mechanism is *at most* (epsilon, delta)-DP. An audit
trains many models, half on ``D`` and half on ``D`` plus one canary, and asks a test "was the
canary in?". Any (epsilon, delta)-DP mechanism forces every such test to satisfy
``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta`` (Kairouz, Oh & Viswanath
2015, "The Composition Theorem for Differential Privacy", arXiv:1311.0776), so the measured error
rates, taken at their Clopper-Pearson upper confidence limits, give an epsilon the mechanism
must exceed with probability ``confidence``. A bound above the accountant's epsilon is a bug in
the implementation or the accountant; a bound far below it says the attack (here black-box:
the final model's loss on the canary) is weak, not that the mechanism is more private.

Threat model: the auditor chooses the canary and sees only the final model's scores on it
(black box, input-space canary). Two canaries: ``"ones"``, the standard mislabelled
out-of-distribution input (every feature at the top of ``bounds``), and ``"dead-pixels"``,
which lights only the features that are (almost) never on in ``D`` — their weights receive
(almost) no gradient from the data, so for a linear model or a first layer the canary's own
update is not drowned by the others' (an input-space cousin of Nasr et al. 2023's gradient-space
"Dirac" canary). Both get the label a model trained without them finds least likely.

Threshold choice cannot be allowed to inflate the bound: with ``threshold=None`` the threshold
is picked on the even-numbered trials of each side and the bound is computed on the odd ones
only (a held-out half; the trials are independent and identically distributed, so the held-out
counts are plain binomials). A threshold fixed before the experiment uses every trial.

    >>> epsilon_lower_bound(fp=0, fn=0, n_out=500, n_in=500, delta=1e-5).epsilon  # doctest: +ELLIPSIS
    4.9...
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gibbon.core.checks import GibbonInputError

CANARIES = ("dead-pixels", "ones")
STATE = "audit_state.json"
RESULT = "audit.json"
FORMAT = "gibbon-dp-audit/1"
#: a feature counts as "dead" when its mean over the training inputs is below this fraction of the bounds' range
DEAD_FRACTION = 0.01


# ----------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical lower bound on epsilon and the counts it rests on.

    ``fp`` of ``n_out`` models trained without the canary were called members, ``fn`` of ``n_in``
    trained with it were not; ``fpr_upper`` and ``fnr_upper`` are their Clopper-Pearson upper
    limits, each at level ``sqrt(confidence)`` so that both hold at once with probability
    ``confidence`` (the two sides are independent runs). ``selection`` says how the threshold
    was chosen: ``"held-out half"`` or ``"fixed"``.
    """

    epsilon: float
    fp: int
    fn: int
    n_out: int
    n_in: int
    fpr_upper: float
    fnr_upper: float
    delta: float
    confidence: float
    threshold: float | None = None
    selection: str = "fixed"

    def to_dict(self) -> dict:
        return asdict(self)


def _check_confidence_delta(confidence, delta) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise GibbonInputError(f"confidence must be in (0, 1) (0.95 is usual), got {confidence!r}")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise GibbonInputError(f"delta must be in (0, 1) (the accountant's delta, below 1/n), got {delta!r}")


def clopper_pearson_upper(k, n, level):
    """One-sided Clopper-Pearson upper limit on a binomial rate after ``k`` of ``n`` (arrays allowed):
    the ``p`` with ``P(Bin(n, p) <= k) = 1 - level``, i.e. the ``level`` quantile of Beta(k + 1, n - k);
    1 when ``k == n`` (Clopper & Pearson 1934)."""
    from scipy.stats import beta

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        upper = beta.ppf(level, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k >= n, 1.0, upper)


def _bound(fp, fn, n_out, n_in, delta, confidence):
    """Vectorised core of :func:`epsilon_lower_bound`: (epsilon, fpr_upper, fnr_upper)."""
    level = math.sqrt(confidence)  # independent out/in runs: the joint coverage is level ** 2 = confidence
    fpr, fnr = clopper_pearson_upper(fp, n_out, level), clopper_pearson_upper(fn, n_in, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        # both DP inequalities hold for the same test (Kairouz et al. 2015, theorem 2.1); an upper limit of 0
        # cannot occur (Clopper-Pearson's is > 0 for n finite), so the bound is always finite
        a = np.log(np.maximum(1 - delta - fpr, 0) / fnr)
        b = np.log(np.maximum(1 - delta - fnr, 0) / fpr)
    eps = np.maximum(np.maximum(np.nan_to_num(a, nan=0.0, neginf=0.0), np.nan_to_num(b, nan=0.0, neginf=0.0)), 0.0)
    return eps, fpr, fnr


def epsilon_lower_bound(fp: int, fn: int, n_out: int, n_in: int, delta: float, confidence: float = 0.95,
                        *, threshold: float | None = None, selection: str = "fixed") -> EpsilonBound:
    """Epsilon that any mechanism whose test has these error counts must exceed, with probability ``confidence``.

    ``eps_lb = max(log((1 - delta - FPR_ub) / FNR_ub), log((1 - delta - FNR_ub) / FPR_ub), 0)`` with
    Clopper-Pearson upper limits (Jagielski et al. 2020, arXiv:2006.07709, algorithm 2). The test's threshold
    must not have been chosen on these same trials (see :func:`audit_statistics`).

    Args:
        fp: trials without the canary that the test called "member".
        fn: trials with the canary that it called "non-member".
        n_out, n_in: trials per side (at least 1 each).
        delta: the delta of the guarantee being audited.
        confidence: probability that the bound holds, in (0, 1).

    Example (no errors in 100 + 100 trials is worth at most ~3.3 at 95%):
        >>> round(epsilon_lower_bound(0, 0, 100, 100, 1e-5).epsilon, 3)
        3.285
    """
    _check_confidence_delta(confidence, delta)
    for name, k, n in (("fp", fp, n_out), ("fn", fn, n_in)):
        if int(n) != n or n < 1 or int(k) != k or not 0 <= k <= n:
            raise GibbonInputError(f"{name} must be a whole count in [0, {n}] out of >= 1 trials, got {k!r} of {n!r}")
    eps, fpr, fnr = _bound(fp, fn, n_out, n_in, float(delta), float(confidence))
    return EpsilonBound(float(eps), int(fp), int(fn), int(n_out), int(n_in), float(fpr), float(fnr), float(delta),
                        float(confidence), None if threshold is None else float(threshold), selection)


def max_epsilon_lower_bound(n_out: int, n_in: int, delta: float, confidence: float = 0.95) -> float:
    """The largest bound ``n_out + n_in`` trials can give (a perfect test): the ceiling of an audit of that size."""
    return epsilon_lower_bound(0, 0, n_out, n_in, delta, confidence).epsilon


def _counts(out_scores, in_scores, thresholds):
    """(fp, fn) per threshold for the test "member iff score >= threshold"."""
    out_sorted, in_sorted = np.sort(out_scores), np.sort(in_scores)
    fp = len(out_sorted) - np.searchsorted(out_sorted, thresholds, side="left")
    fn = np.searchsorted(in_sorted, thresholds, side="left")
    return fp, fn


def _check_scores(scores, name) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) < 2:
        raise GibbonInputError(f"{name}: an audit needs at least 2 trials per side, got {len(s)}; run more trials")
    if not np.isfinite(s).all():
        raise GibbonInputError(f"{name}: {int((~np.isfinite(s)).sum())} statistics are NaN or infinite; "
                               "clip the score (e.g. a logit margin instead of a probability) or drop diverged runs")
    return s


def audit_statistics(out_scores, in_scores, delta: float, confidence: float = 0.95, *,
                     threshold: float | None = None) -> EpsilonBound:
    """The lower bound from per-trial statistics (higher score: "the canary was in").

    With ``threshold=None`` the threshold maximising the bound on the even-numbered trials of each side
    is applied to the odd-numbered ones, and only those enter the bound (so the threshold search cannot
    inflate it; half the trials are spent on the search). A ``threshold`` fixed in advance uses all trials.

    Args:
        out_scores: statistic of each model trained without the canary.
        in_scores: statistic of each model trained with it.
        delta, confidence: as in :func:`epsilon_lower_bound`.
        threshold: a threshold chosen without looking at these scores, or None.
    """
    _check_confidence_delta(confidence, delta)
    out_s, in_s = _check_scores(out_scores, "out_scores"), _check_scores(in_scores, "in_scores")
    if threshold is not None:
        fp, fn = _counts(out_s, in_s, np.array([float(threshold)]))
        return epsilon_lower_bound(int(fp[0]), int(fn[0]), len(out_s), len(in_s), delta, confidence,
                                   threshold=threshold, selection="fixed")
    sel_out, sel_in, ev_out, ev_in = out_s[0::2], in_s[0::2], out_s[1::2], in_s[1::2]
    pooled = np.unique(np.r_[sel_out, sel_in])
    # candidates: between consecutive selection scores, and beyond both ends (the trivial tests)
    candidates = np.r_[pooled[0] - 1.0, (pooled[:-1] + pooled[1:]) / 2, pooled[-1] + 1.0]
    fp, fn = _counts(sel_out, sel_in, candidates)
    eps, _, _ = _bound(fp, fn, len(sel_out), len(sel_in), float(delta), float(confidence))
    best = np.flatnonzero(eps == eps.max())
    # among equally good thresholds take the middle one: it sits in the centre of the gap between the sides
    chosen = float(candidates[best[len(best) // 2]])
    fp, fn = _counts(ev_out, ev_in, np.array([chosen]))
    return epsilon_lower_bound(int(fp[0]), int(fn[0]), len(ev_out), len(ev_in), delta, confidence,
                               threshold=chosen, selection="held-out half")


# ------------------------------------------------------------------------------------- canaries


@dataclass(frozen=True)
class Canary:
    """The example whose membership is tested: input ``x`` (the data's shape, no batch axis) and label ``y``."""

    x: torch.Tensor = field(repr=False)
    y: int
    kind: str
    features: int  # how many input features are set to the top of the bounds

    def describe(self) -> str:
        return f"{self.kind} canary ({self.features} features at the top of the bounds), label {self.y}"


def canary_input(train, kind: str = "dead-pixels") -> torch.Tensor:
    """The canary's input for ``train`` (a gibbon Dataset): ``"ones"`` sets every feature to the top of
    ``train.bounds``; ``"dead-pixels"`` sets only the features whose mean over ``train.x`` is below 1% of
    the bounds' range (all others at the bottom)."""
    if kind not in CANARIES:
        raise GibbonInputError(f"canary must be one of {', '.join(CANARIES)}, got {kind!r}")
    lo, hi = (float(b) for b in train.bounds)
    if kind == "ones":
        return torch.full(train.x.shape[1:], hi, dtype=train.x.dtype)
    dead = train.x.mean(0) <= lo + DEAD_FRACTION * (hi - lo)
    if not dead.any():
        raise GibbonInputError("the training inputs have no (almost) unused features for a dead-pixels canary; "
                               "use canary='ones'")
    return torch.where(dead, torch.tensor(hi, dtype=train.x.dtype), torch.tensor(lo, dtype=train.x.dtype))


def canary_score(model: nn.Module, canary: Canary) -> float:
    """The membership statistic: the canary's logit-scaled confidence ``log p_y - log(1 - p_y)``
    (Carlini et al. 2022, arXiv:2112.03570), a monotone function of its loss that stays finite where
    the loss underflows. Higher: more likely a member."""
    with torch.no_grad():
        logits = model(canary.x[None].to(next(model.parameters()).device)).double()[0]
    others = torch.cat([logits[:canary.y], logits[canary.y + 1:]])
    return float(logits[canary.y] - torch.logsumexp(others, 0))


# ------------------------------------------------------------------------------------ training


def softmax_regression(input_shape, num_classes: int) -> nn.Module:
    """Flatten + one linear layer: the cheap model the audits train hundreds of times."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), int(num_classes)))


def train_plain(model: nn.Module, train, *, epochs: int, batch_size: int, lr: float, seed: int) -> nn.Module:
    """The non-private twin of :func:`gibbon.defenses.dp_sgd.train_dp`: the same Poisson-sampled batches
    (rate ``1 / ceil(n / batch_size)``), SGD with momentum 0.9 and the loss summed over the batch and
    divided by its *expected* size (as Opacus does), but no clipping and no noise: epsilon is infinite."""
    from gibbon.zoo.training import make_optimizer

    n = len(train.y)
    per_epoch = math.ceil(n / batch_size)
    rate, expected = 1.0 / per_epoch, n / per_epoch
    gen = torch.Generator().manual_seed(int(seed))
    opt = make_optimizer("sgd", model.parameters(), lr, 0.0)
    model.train()
    for _ in range(int(epochs) * per_epoch):
        take = torch.rand(n, generator=gen) < rate
        if not take.any():
            continue
        opt.zero_grad(set_to_none=True)
        (F.cross_entropy(model(train.x[take]), train.y[take], reduction="sum") / expected).backward()
        opt.step()
    model.eval()
    return model


def _with(train, canary: Canary | None):
    import dataclasses

    if canary is None:
        return train
    return dataclasses.replace(train, x=torch.cat([train.x, canary.x[None]]),
                               y=torch.cat([train.y, torch.tensor([canary.y], dtype=train.y.dtype)]))


# ----------------------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class AuditResult:
    """An audit's outcome: the empirical lower bound next to the accountant's epsilon (inf: not private)."""

    bound: EpsilonBound
    accountant_epsilon: float
    max_possible: float  # the bound a perfect test would give with these held-out trial counts
    noise: float | None
    trials: int  # per side
    seconds_per_run: float
    scores_out: tuple = field(repr=False)
    scores_in: tuple = field(repr=False)
    canary: str = ""
    config: dict = field(default_factory=dict, repr=False)

    @property
    def tightness(self) -> float:
        """``eps_lb / accountant eps`` (1: the accountant is tight for this attack; 0 for a non-private run)."""
        return self.bound.epsilon / self.accountant_epsilon if math.isfinite(self.accountant_epsilon) else 0.0

    def summary(self) -> str:
        return (f"audit: epsilon >= {self.bound.epsilon:.3f} at {self.bound.confidence:.0%} confidence "
                f"(accountant {self.accountant_epsilon:.3g}, delta {self.bound.delta:g}; {self.trials} + "
                f"{self.trials} runs, at most {self.max_possible:.2f} possible; {self.seconds_per_run:.3f} s/run)")

    def to_dict(self) -> dict:
        return {"bound": self.bound.to_dict(), "accountant_epsilon": _json_float(self.accountant_epsilon),
                "max_possible": self.max_possible, "noise": self.noise, "trials": self.trials,
                "seconds_per_run": self.seconds_per_run, "tightness": self.tightness, "canary": self.canary,
                "config": self.config, "scores_out": list(self.scores_out), "scores_in": list(self.scores_in)}


@dataclass(frozen=True)
class DPSGDAudit:
    """Hyper-parameters of :func:`audit_dp_sgd`; calling it runs the audit."""

    epsilon: float = 1.0
    delta: float = 1e-5
    trials: int = 100
    epochs: int = 3
    batch_size: int = 100
    lr: float = 1.0
    clip: float = 1.0
    canary: str = "dead-pixels"
    confidence: float = 0.95
    seed: int = 0

    def __call__(self, train, *, out_dir=None, model_factory=None, save_every: int = 20,
                 progress: bool = True) -> AuditResult:
        return audit_dp_sgd(train, **asdict(self), out_dir=out_dir, model_factory=model_factory,
                            save_every=save_every, progress=progress)


def audit_dp_sgd(train, *, epsilon: float = 1.0, delta: float = 1e-5, trials: int = 100, epochs: int = 3,
                 batch_size: int = 100, lr: float = 1.0, clip: float = 1.0, canary: str = "dead-pixels",
                 confidence: float = 0.95, seed: int = 0, out_dir=None, model_factory=None, save_every: int = 20,
                 progress: bool = True) -> AuditResult:
    """Audit DP-SGD (:func:`gibbon.defenses.dp_sgd.train_dp`, SGD, RDP accountant) at ``epsilon``: train
    ``trials`` models on ``train`` and ``trials`` on ``train`` plus a canary, score the canary on each
    final model and turn the scores into a lower bound (:func:`audit_statistics`, held-out threshold).

    ``epsilon=math.inf`` trains without privacy (:func:`train_plain`, the same batches, no clipping or noise).
    Otherwise the noise is chosen once by the accountant so that ``epochs`` passes over the canary-augmented
    set spend ``epsilon`` at ``delta``. All runs start from the same initial weights (``model_factory()``
    under ``torch.manual_seed(seed)``; a softmax regression by default): the guarantee holds for any
    data-independent start, and a fixed one leaves only the mechanism's own randomness (Poisson sampling,
    Gaussian noise) between the runs. Run ``i`` uses seeds ``2 i`` and ``2 i + 1`` (offset by ``seed``),
    so no two runs share a generator; runs alternate out / in.

    With ``out_dir`` the per-run scores are written to ``audit_state.json`` (atomically) every ``save_every``
    runs and a rerun with the same settings continues where the last one stopped; the result goes to
    ``audit.json``.

    Returns:
        An :class:`AuditResult` (``.bound.epsilon`` is the lower bound, ``.accountant_epsilon`` the upper).

    Example:
        >>> r = audit_dp_sgd(data.load("digits", "train", n=299), epsilon=1.0, trials=50)  # doctest: +SKIP
        >>> r.bound.epsilon <= r.accountant_epsilon  # doctest: +SKIP
        True
    """
    from gibbon.defenses.dp_sgd import noise_for_epsilon, privacy_spent, train_dp
    from gibbon.evaluation.report import write_json_atomic

    _check_confidence_delta(confidence, delta)
    if int(trials) != trials or trials < 2:
        raise GibbonInputError(f"trials (per side) must be a whole number >= 2, got {trials!r}; 100 or more is usual")
    if not (epsilon > 0):
        raise GibbonInputError(f"epsilon must be > 0 (math.inf for a non-private baseline), got {epsilon!r}")
    n = len(train.y)
    if n < 1 or int(batch_size) != batch_size or batch_size < 1 or int(epochs) != epochs or epochs < 1:
        raise GibbonInputError("audit needs a non-empty train set and whole epochs, batch_size >= 1")
    if n % batch_size == 0:
        # train_dp's sampling rate is 1 / ceil(n / batch_size): it must not change when the canary is added
        raise GibbonInputError(f"{n} training examples is a multiple of batch_size {batch_size}, so the canary would "
                               "change the sampling rate; drop one example or change batch_size")
    factory = model_factory or (lambda: softmax_regression(train.x.shape[1:], train.num_classes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        init = factory()
    per_epoch = math.ceil((n + 1) / batch_size)
    rate, steps = 1.0 / per_epoch, int(epochs) * per_epoch
    private = math.isfinite(epsilon)
    noise = noise_for_epsilon(float(epsilon), rate, steps, delta) if private else None
    accountant = privacy_spent(noise, rate, steps, delta) if private else math.inf

    x_c = canary_input(train, canary)
    # the label a model trained without the canary finds least likely: its gradient is then large and points away
    # from what the data teach
    reference = train_plain(copy.deepcopy(init), train, epochs=epochs, batch_size=batch_size, lr=lr, seed=-1 - seed)
    with torch.no_grad():
        label = int(reference(x_c[None]).argmin())
    can = Canary(x_c, label, canary, int((x_c > float(train.bounds[0])).sum()))
    with_canary = _with(train, can)

    config = {"format": FORMAT, "epsilon": _json_float(epsilon), "delta": delta, "trials": int(trials),
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": lr, "clip": clip, "canary": canary,
              "canary_label": label, "seed": int(seed), "n": n, "noise": noise, "data": _fingerprint(train),
              "init": _fingerprint_model(init)}
    scores = {"out": [], "in": []}
    seconds: list[float] = []
    state = Path(out_dir) / STATE if out_dir is not None else None
    if state is not None and state.exists():
        scores, seconds = _resume(state, config)

    def save():
        if state is not None:
            write_json_atomic(state, {"config": config, "scores": scores, "seconds": seconds})

    done = len(scores["out"]) + len(scores["in"])
    base = 2 * (int(seed) * 1_000_003)  # distinct seeds across audits with different ``seed`` too
    with warnings.catch_warnings():
        # Opacus warns on every run that secure RNG is off (the seeded noise is the point here) and that the
        # backward hook fires on outputs (inputs need no grad): hundreds of identical lines would bury the progress
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        for i in range(done, 2 * int(trials)):
            member = i % 2 == 1
            data_i = with_canary if member else train
            model = copy.deepcopy(init)
            t0 = time.perf_counter()
            if private:
                train_dp(model, data_i, noise=noise, clip=clip, delta=delta, epochs=epochs, batch_size=batch_size,
                         optimizer="sgd", lr=lr, seed=base + 2 * i, progress=False)
            else:
                train_plain(model, data_i, epochs=epochs, batch_size=batch_size, lr=lr, seed=base + 2 * i)
            seconds.append(time.perf_counter() - t0)
            scores["in" if member else "out"].append(canary_score(model, can))
            if (i + 1) % save_every == 0 or i + 1 == 2 * trials:
                save()
                if progress:
                    print(f"audit eps {epsilon:g}: {i + 1}/{2 * trials} runs, {np.mean(seconds):.3f} s/run",
                          flush=True)
    bound = audit_statistics(scores["out"], scores["in"], delta, confidence)
    result = AuditResult(bound=bound, accountant_epsilon=accountant,
                         max_possible=max_epsilon_lower_bound(bound.n_out, bound.n_in, delta, confidence),
                         noise=noise, trials=int(trials), seconds_per_run=float(np.mean(seconds)),
                         scores_out=tuple(scores["out"]), scores_in=tuple(scores["in"]), canary=can.describe(),
                         config=config)
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / RESULT, result.to_dict())
    if progress:
        print(result.summary(), flush=True)
    return result


def _json_float(v: float):
    return v if math.isfinite(v) else "inf"


def _fingerprint(train) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(train.x.detach().cpu().numpy()).tobytes())
    h.update(np.ascontiguousarray(train.y.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def _fingerprint_model(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def _resume(path: Path, config: dict):
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GibbonInputError(f"cannot read the audit state {path} ({e}); delete it to start again") from None
    if state.get("config") != json.loads(json.dumps(config)):
        raise GibbonInputError(f"the audit state {path} is from an audit with other settings; delete it or use "
                               "another out_dir")
    scores = state["scores"]
    return {"out": list(scores["out"]), "in": list(scores["in"])}, list(state["seconds"])

"""PATE: Private Aggregation of Teacher Ensembles.

* Papernot, Abadi, Erlingsson, Goodfellow & Talwar 2017, "Semi-supervised Knowledge Transfer for
  Deep Learning from Private Training Data", arXiv:1610.05755: the LNMax aggregator (Laplace noisy
  max) and its data-dependent moments-accountant bound (Theorems 2 and 3).
* Papernot, Song, Mironov, Raghunathan, Talwar & Erlingsson 2018, "Scalable Private Learning with
  PATE", arXiv:1802.08908: GNMax (Gaussian noisy max), Confident-GNMax (Algorithm 1: answer only
  when the noisy top count clears a threshold) and their data-dependent Renyi-DP bounds
  (Theorem 6, Proposition 7; the threshold step in section 4 / appendix).

Threat model: the teachers' *training sets* are private; the student's unlabelled inputs and the
released labels are public. ``n`` teachers are trained on disjoint shards, so one private example
changes at most one teacher's vote: two counts of a vote histogram by one each.

The pipeline is split so that nothing is retrained to re-run the analysis:
:func:`train_teachers` -> vote histograms (saved with :func:`save_votes`, npz, no pickle) ->
an aggregator (:func:`lnmax`, :func:`gnmax`, :func:`confident_gnmax`) -> labels -> a student;
:func:`lnmax_privacy` / :func:`confident_gnmax_privacy` give epsilon from the histograms alone.

**Data-dependent epsilons are not private releases.** They depend on the private votes, so
publishing them leaks; the papers release them through smooth sensitivity (2018, section 4.3,
appendix C), which is *not* implemented here. The data-independent epsilon is a real guarantee.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError

#: Renyi orders lambda (> 1) at which costs are tracked; eps is the best over them.
DEFAULT_ORDERS = np.concatenate([np.arange(1.25, 2.0, 0.25), np.arange(2.0, 100.0, 0.5),
                                 np.logspace(2.0, 3.0, 40)])
#: The 2017 paper's moments l = 1..8, i.e. Renyi orders lambda = l + 1 (its analysis.py).
MOMENTS_2017_ORDERS = np.arange(2.0, 10.0)


# ---------------------------------------------------------------------------------- validation

def check_votes(votes, *, num_classes: int | None = None) -> np.ndarray:
    """Vote histograms as a float64 ``(N, K)`` array: one row per query, counts >= 0, equal row sums."""
    arr = votes.detach().cpu().numpy() if isinstance(votes, torch.Tensor) else np.asarray(votes)
    if arr.ndim != 2 or arr.shape[1] < 2 or (num_classes is not None and arr.shape[1] != num_classes):
        want = f"(queries, {num_classes})" if num_classes is not None else "(queries, classes >= 2)"
        raise GibbonInputError(f"vote histograms must have shape {want}, got {arr.shape}; "
                               "pass one row of per-class teacher counts per query")
    if not np.issubdtype(arr.dtype, np.number):
        raise GibbonInputError(f"vote histograms must be numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise GibbonInputError("vote histograms must be finite counts >= 0; pass the teachers' per-class counts")
    sums = arr.sum(axis=1)
    if len(arr) and not np.allclose(sums, sums[0]):
        raise GibbonInputError(f"every vote histogram must sum to the number of teachers, got row sums from "
                               f"{sums.min():g} to {sums.max():g}; count one vote per teacher per query")
    return arr


def _positive(value, name: str, hint: str) -> float:
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
        raise GibbonInputError(f"pate: {name} must be a finite number > 0, got {value!r} ({hint})")
    return float(value)


def _check_threshold(threshold) -> float:
    if not (isinstance(threshold, (int, float, np.floating)) and math.isfinite(threshold) and threshold >= 0):
        raise GibbonInputError(f"pate: threshold must be a finite number >= 0 (a vote count), got {threshold!r}")
    return float(threshold)


def _check_delta(delta) -> float:
    if not (isinstance(delta, (int, float, np.floating)) and 0 < delta < 1):
        raise GibbonInputError(f"pate: delta must be in (0, 1) (1e-5 for MNIST's 60k images), got {delta!r}")
    return float(delta)


def _orders(orders) -> np.ndarray:
    out = np.atleast_1d(np.asarray(DEFAULT_ORDERS if orders is None else orders, dtype=np.float64))
    if out.ndim != 1 or len(out) == 0 or not np.isfinite(out).all() or (out <= 1).any():
        raise GibbonInputError("pate: Renyi orders must be finite numbers > 1, e.g. numpy.arange(2, 64)")
    return out


# ---------------------------------------------------------------------------------- teachers

def partition(n: int, teachers: int, *, seed: int = 0) -> list[torch.Tensor]:
    """Disjoint shards of ``range(n)``, as equal as possible, from a seeded permutation."""
    if int(teachers) != teachers or teachers < 2:
        raise GibbonInputError(f"pate: teachers must be a whole number >= 2, got {teachers!r}")
    if teachers > n:
        raise GibbonInputError(f"pate: {teachers} teachers need at least as many training examples, got {n}; "
                               "use fewer teachers")
    perm = torch.randperm(int(n), generator=torch.Generator().manual_seed(int(seed)))
    return list(torch.tensor_split(perm, int(teachers)))


def votes_from_predictions(predictions, num_classes: int) -> np.ndarray:
    """``(teachers, N)`` predicted labels -> ``(N, K)`` int64 vote histograms."""
    pred = torch.as_tensor(predictions).long()
    onehot = torch.zeros(pred.shape[1], num_classes, dtype=torch.int64)
    for row in pred:
        onehot.scatter_add_(1, row[:, None], torch.ones_like(row[:, None]))
    return onehot.numpy()


def train_teachers(train, public_x: torch.Tensor, *, teachers: int, arch: str = "lenet5", epochs: int = 40,
                   batch_size: int = 32, lr: float = 2e-3, seed: int = 0, device=None, batch_predict: int = 1000,
                   progress: bool = False) -> dict:
    """Train ``teachers`` models of zoo ``arch`` on disjoint shards of ``train`` and vote on ``public_x``.

    Teacher ``i`` gets shard ``i`` of :func:`partition` (seeded with ``seed``), initial weights from
    seed ``seed * 100_003 + i`` and :func:`gibbon.zoo.fit` (Adam, ``seed + i``), so a run is
    reproducible; the global RNG is left as it was. Teachers are dropped after voting: only the
    histograms are needed downstream (the 2017 paper's ``teachers_preds`` play the same role).

    Returns:
        ``{"votes": (N, K) int64 histograms, "predictions": (teachers, N) labels, "meta": {...}}``
        (settings, wall and CPU seconds): pass them to :func:`save_votes`.
    """
    from gibbon import zoo

    shards = partition(len(train.y), teachers, seed=seed)
    preds = []
    start, cpu0 = time.perf_counter(), time.process_time()
    for i, rows in enumerate(shards):
        shard = dataclasses.replace(train, x=train.x[rows], y=train.y[rows], meta={})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) * 100_003 + i)
            model = zoo.build(arch, train)
        zoo.fit(model, shard, epochs=epochs, batch_size=batch_size, lr=lr, seed=int(seed) + i, progress=False,
                device=device)
        dev = next(model.parameters()).device
        with torch.no_grad():
            preds.append(torch.cat([model(public_x[j:j + batch_predict].to(dev)).argmax(dim=1).cpu()
                                    for j in range(0, len(public_x), batch_predict)]))
        if progress and (i + 1) % 25 == 0:
            print(f"pate: {i + 1}/{len(shards)} teachers, {time.perf_counter() - start:.0f} s", flush=True)
    predictions = torch.stack(preds)
    meta = {"teachers": int(teachers), "arch": arch, "epochs": int(epochs), "batch_size": int(batch_size),
            "lr": float(lr), "seed": int(seed), "train_examples": len(train.y), "dataset": train.name,
            "shard_size": [int(min(len(s) for s in shards)), int(max(len(s) for s in shards))],
            "wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu0}
    return {"votes": votes_from_predictions(predictions, train.num_classes), "predictions": predictions.numpy(),
            "meta": meta}


def save_votes(path, votes, *, predictions=None, meta: dict | None = None) -> Path:
    """Write vote histograms (and optionally each teacher's predictions) to an ``.npz``, atomically.

    ``meta`` goes in as a JSON string, so :func:`load_votes` never needs pickle.
    """
    from gibbon.zoo.io import write_npz_atomic

    arrays = {"votes": np.asarray(check_votes(votes), dtype=np.int64), "meta": np.array(json.dumps(meta or {}))}
    if predictions is not None:
        arrays["predictions"] = np.asarray(predictions, dtype=np.int16)  # class indices; 4x smaller
    return write_npz_atomic(path, arrays, compressed=True)


def load_votes(path) -> dict:
    """Read what :func:`save_votes` wrote: ``{"votes", "predictions" (or None), "meta"}``."""
    with np.load(Path(path), allow_pickle=False) as f:
        return {"votes": f["votes"], "predictions": f["predictions"] if "predictions" in f.files else None,
                "meta": json.loads(str(f["meta"]))}


# ---------------------------------------------------------------------------------- aggregators

def _counts(votes) -> torch.Tensor:
    return torch.as_tensor(check_votes(votes), dtype=torch.float64)


def lnmax(votes, *, gamma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """LNMax (2017, eq. 1): ``argmax_j n_j + Lap(1 / gamma)``, one label per query.

    Example:
        >>> lnmax([[9, 1, 0]], gamma=1e3).tolist()
        [0]
    """
    gamma = _positive(gamma, "gamma", "the inverse Laplace scale; the 2017 paper uses 0.05 on MNIST")
    counts = _counts(votes)
    # Laplace by inverse CDF from a seeded uniform: torch.distributions takes no generator.
    u = torch.rand(counts.shape, generator=generator, dtype=torch.float64) - 0.5
    noise = -torch.sign(u) * torch.log1p(-2 * u.abs()) / gamma
    return (counts + noise).argmax(dim=1)


def gnmax(votes, *, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """GNMax (2018, section 4.1): ``argmax_j n_j + N(0, sigma^2)``."""
    sigma = _positive(sigma, "sigma", "the Gaussian noise std; the 2018 paper uses 40 on MNIST")
    counts = _counts(votes)
    return (counts + sigma * torch.randn(counts.shape, generator=generator, dtype=torch.float64)).argmax(dim=1)


def confident_gnmax(votes, *, threshold: float, sigma1: float, sigma2: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Confident-GNMax (2018, Algorithm 1): the label where ``max_j n_j + N(0, sigma1^2) >= threshold``,
    else -1 (no answer). Then GNMax with ``sigma2`` on the answered queries.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> confident_gnmax([[250, 0], [125, 125]], threshold=200, sigma1=1e-3, sigma2=1e-3, generator=g).tolist()
        [0, -1]
    """
    threshold = _check_threshold(threshold)
    sigma1 = _positive(sigma1, "sigma1", "the selection step's noise std; 150 on MNIST")
    sigma2 = _positive(sigma2, "sigma2", "the answer step's noise std; 40 on MNIST")
    counts = _counts(votes)
    # both noises are drawn for every query, so which queries are answered does not change the stream
    check = counts.max(dim=1).values + sigma1 * torch.randn(len(counts), generator=generator, dtype=torch.float64)
    labels = (counts + sigma2 * torch.randn(counts.shape, generator=generator, dtype=torch.float64)).argmax(dim=1)
    return torch.where(check >= threshold, labels, torch.full_like(labels, -1))


# ---------------------------------------------------------------------------------- RDP analysis

def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


def _gaps(counts: np.ndarray) -> np.ndarray:
    """``n_{i*} - n_j`` for the ``K - 1`` classes other than the (first) top class ``i*``."""
    top = counts.argmax(axis=1)
    gaps = counts[np.arange(len(counts)), top][:, None] - counts
    keep = np.ones_like(gaps, dtype=bool)
    keep[np.arange(len(counts)), top] = False
    return gaps[keep].reshape(len(counts), -1)


def logq_gnmax(votes, sigma: float) -> np.ndarray:
    """Per query, ln of Proposition 7's union bound on ``q = Pr[GNMax != argmax]`` (2018):
    ``sum_{j != i*} Pr[N(0, 2 sigma^2) >= n_{i*} - n_j]``, capped at ``1 - 1/K``."""
    from scipy.stats import norm

    sigma = _positive(sigma, "sigma", "the Gaussian noise std")
    counts = check_votes(votes)
    logq = _logsumexp_rows(norm.logsf(_gaps(counts), scale=math.sqrt(2) * sigma))
    return np.minimum(logq, math.log(1 - 1 / counts.shape[1]))


def logq_lnmax(votes, gamma: float) -> np.ndarray:
    """Per query, ln of the 2017 paper's bound (its Lemma 4 by a union bound) on ``q = Pr[LNMax !=
    argmax]``: ``sum_{j != i*} (2 + gamma d_j) / (4 exp(gamma d_j))`` with ``d_j = n_{i*} - n_j``."""
    gamma = _positive(gamma, "gamma", "the inverse Laplace scale")
    counts = check_votes(votes)
    g = gamma * _gaps(counts)
    logq = _logsumexp_rows(np.log(2 + g) - math.log(4) - g)
    return np.minimum(logq, math.log(1 - 1 / counts.shape[1]))


def rdp_gnmax_data_independent(sigma: float, orders=None) -> np.ndarray:
    """GNMax is ``(lambda, lambda / sigma^2)``-RDP for every order (2018, Proposition 8): one vote
    moves two counts by one, an L2 change of ``sqrt(2)``, and ``(sqrt 2)^2 / (2 sigma^2) = 1 / sigma^2``.

    Example:
        >>> rdp_gnmax_data_independent(40.0, [2.0, 10.0]).tolist()
        [0.00125, 0.00625]
    """
    return _orders(orders) / _positive(sigma, "sigma", "the Gaussian noise std") ** 2


def rdp_threshold_data_independent(sigma1: float, orders=None) -> np.ndarray:
    """The selection step adds N(0, sigma1^2) to the *max* count, which one vote moves by at most
    one: the Gaussian mechanism of sensitivity 1, ``lambda / (2 sigma1^2)``."""
    return _orders(orders) / (2 * _positive(sigma1, "sigma1", "the selection step's noise std") ** 2)


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near both ends."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < -0.693, np.log1p(-np.exp(x)), np.log(-np.expm1(x)))


def rdp_from_logq(logq, sigma: float, orders=None) -> np.ndarray:
    """Data-dependent RDP of a mechanism that is ``(lambda, lambda / sigma^2)``-RDP at all orders and
    whose most likely outcome has probability ``1 - q`` (2018, Theorem 6 with Proposition 10's
    choice of the two higher orders). ``logq`` has shape ``(N,)``; returns ``(N, orders)``.

    Theorem 6 needs ``mu_2 = sigma sqrt(ln 1/q) > 1``, ``lambda < mu_1 = mu_2 + 1`` and ``q`` small
    enough that the bound increases in q (condition on ``q`` in Proposition 10); where any fails, or
    where it is larger, the data-independent ``lambda / sigma^2`` is kept.
    """
    orders = _orders(orders)
    logq = np.atleast_1d(np.asarray(logq, dtype=np.float64))
    var = sigma ** 2
    out = np.tile(orders / var, (len(logq), 1))
    for i, lq in enumerate(logq):
        if lq > 0:
            raise GibbonInputError(f"pate: logq must be <= 0 (a log-probability), got {lq!r}")
        if np.isneginf(lq):  # the outcome is certain: a constant mechanism costs nothing
            out[i] = 0.0
            continue
        mu2 = math.sqrt(var * -lq)
        mu1 = mu2 + 1
        eps1, eps2 = mu1 / var, mu2 / var
        if mu2 <= 1 or -lq <= eps2:  # needs q e^{eps2} < 1
            continue
        # Proposition 10's condition: q <= e^{(mu2 - 1) eps2} / (mu1/(mu1-1) * mu2/(mu2-1))^{mu2}
        if lq > (mu2 - 1) * eps2 - mu2 * (math.log1p(1 / (mu1 - 1)) + math.log1p(1 / (mu2 - 1))):
            continue
        ok = orders < mu1
        lam = orders[ok]
        log1q = float(_log1mexp(lq))
        # Theorem 6: eps = 1/(lambda-1) log((1-q) A^{lambda-1} + q B^{lambda-1}),
        # A = (1-q) / (1 - (q e^{eps2})^{(mu2-1)/mu2}), B = e^{eps1} / q^{1/(mu1-1)}
        log_a = log1q - float(_log1mexp((lq + eps2) * (1 - 1 / mu2)))
        log_b = eps1 - lq / (mu1 - 1)
        dep = np.logaddexp(log1q + (lam - 1) * log_a, lq + (lam - 1) * log_b) / (lam - 1)
        out[i, ok] = np.minimum(out[i, ok], dep)
    return out


def rdp_gnmax_data_dependent(votes, sigma: float, orders=None) -> np.ndarray:
    """Per-query data-dependent RDP of GNMax, ``(N, orders)`` (2018, Theorem 6 + Proposition 7)."""
    return rdp_from_logq(logq_gnmax(votes, sigma), sigma, orders)


def logpr_answered(votes, threshold: float, sigma1: float) -> np.ndarray:
    """ln Pr[``max_j n_j + N(0, sigma1^2) >= threshold``] per query."""
    from scipy.stats import norm

    threshold = _check_threshold(threshold)
    sigma1 = _positive(sigma1, "sigma1", "the selection step's noise std")
    return norm.logsf(threshold - check_votes(votes).max(axis=1), scale=sigma1)


def rdp_threshold_data_dependent(votes, threshold: float, sigma1: float, orders=None) -> np.ndarray:
    """Data-dependent RDP of the selection step, ``(N, orders)`` (2018, section 4 / appendix B).

    Its outcome is binary; the less likely one has probability ``q = min(p, 1 - p)``, ``p`` the
    chance of answering, and the step is ``(lambda, lambda / (sqrt(2) sigma1)^2)``-RDP: Theorem 6
    applies with ``sqrt(2) sigma1`` in place of sigma.
    """
    lp = logpr_answered(votes, threshold, sigma1)
    logq = np.minimum(lp, _log1mexp(np.minimum(lp, 0.0)))
    return rdp_from_logq(logq, math.sqrt(2) * sigma1, orders)


def rdp_lnmax_data_dependent(votes, gamma: float, orders=None) -> np.ndarray:
    """Per-query RDP of LNMax from the 2017 paper's moments bound, ``(N, orders)``.

    LNMax is ``2 gamma``-DP (one vote moves two counts). With ``eps = 2 gamma``, moment ``l`` and
    ``q`` from :func:`logq_lnmax`, Theorem 3 bounds the log moment by
    ``log((1-q) ((1-q)/(1 - e^eps q))^l + q e^{eps l})`` when ``q < 1 / (e^eps + 1)``, and
    Theorem 2 (Bun & Steinke 2016, arXiv:1605.02065) by ``eps^2 l (l+1) / 2`` and ``eps l``. A log
    moment ``alpha(l)`` is RDP ``alpha(l) / l`` at order ``lambda = l + 1``.
    """
    gamma = _positive(gamma, "gamma", "the inverse Laplace scale")
    orders = _orders(orders)
    eps = 2 * gamma
    l = orders - 1  # noqa: E741  (the paper's moment)
    logq = logq_lnmax(votes, gamma)
    base = np.minimum(0.5 * eps * eps * l * (l + 1), eps * l)
    out = np.tile(base, (len(logq), 1))
    for i, lq in enumerate(logq):
        if lq < -np.logaddexp(0.0, eps):  # q < 1 / (e^eps + 1), in logs: e^eps overflows for large gamma
            log1q = math.log1p(-math.exp(lq))
            log_t = np.logaddexp(log1q + l * (log1q - float(_log1mexp(eps + lq))), lq + eps * l)
            out[i] = np.minimum(out[i], log_t)
    return out / l


def eps_from_rdp(rdp, orders, delta: float) -> tuple[float, float]:
    """``(eps, best order)``: RDP at order lambda gives ``(rdp + ln(1/delta) / (lambda - 1), delta)``-DP
    (Mironov 2017, arXiv:1702.07476, Proposition 3), minimised over the orders. This is the
    conversion of both PATE papers; Opacus's ``get_privacy_spent`` uses a tighter one (Balle et al.
    2020), so its eps is a little lower for the same curve.

    Example:
        >>> round(eps_from_rdp([1.0, 2.0], [2.0, 3.0], 1e-5)[0], 3)
        7.756
    """
    delta = _check_delta(delta)
    orders = _orders(orders)
    rdp = np.asarray(rdp, dtype=np.float64)
    if rdp.shape != orders.shape:
        raise GibbonInputError(f"pate: one RDP value per order, got {rdp.shape} values for {orders.shape} orders")
    eps = rdp + math.log(1 / delta) / (orders - 1)
    best = int(np.argmin(eps))
    return float(eps[best]), float(orders[best])


# ---------------------------------------------------------------------------------- privacy summaries

@dataclass(frozen=True)
class PrivacyCost:
    """Epsilon at ``delta`` of one PATE run, data-dependent (not private, see the module
    docstring) and data-independent, with the Renyi order each was read at."""

    mechanism: str
    delta: float
    queries: int
    answered: float  # realised count, or the expected count when expected=True
    eps_data_dependent: float
    eps_data_independent: float
    order_data_dependent: float
    order_data_independent: float
    expected: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lnmax_privacy(votes, *, gamma: float, delta: float, orders=None) -> PrivacyCost:
    """Epsilon of answering every row of ``votes`` with LNMax (2017's accounting: all queries cost)."""
    orders = _orders(MOMENTS_2017_ORDERS if orders is None else orders)
    delta = _check_delta(delta)
    per = rdp_lnmax_data_dependent(votes, gamma, orders)
    eps = 2 * float(gamma)
    indep = len(per) * np.minimum(0.5 * eps * eps * orders, eps)  # Bun & Steinke per query, composed
    dd, odd = eps_from_rdp(per.sum(axis=0), orders, delta)
    di, odi = eps_from_rdp(indep, orders, delta)
    return PrivacyCost("LNMax", delta, len(per), float(len(per)), dd, di, odd, odi)


def gnmax_privacy(votes, *, sigma: float, delta: float, orders=None) -> PrivacyCost:
    """Epsilon of answering every row of ``votes`` with GNMax (2018, Theorem 6 per query, composed).

    Example (data-independent: 100 queries at sigma 40 cost 100 lambda / 1600 in RDP):
        >>> cost = gnmax_privacy([[250] + [0] * 9] * 100, sigma=40.0, delta=1e-5)
        >>> round(cost.eps_data_independent, 3), round(cost.eps_data_dependent, 3)
        (1.759, 0.351)
    """
    orders = _orders(orders)
    per = rdp_gnmax_data_dependent(votes, sigma, orders)
    dd, odd = eps_from_rdp(per.sum(axis=0), orders, delta)
    di, odi = eps_from_rdp(len(per) * rdp_gnmax_data_independent(sigma, orders), orders, delta)
    return PrivacyCost("GNMax", _check_delta(delta), len(per), float(len(per)), dd, di, odd, odi)


def confident_gnmax_privacy(votes, answered=None, *, threshold: float, sigma1: float, sigma2: float,
                            delta: float, orders=None) -> PrivacyCost:
    """Epsilon of Confident-GNMax on every row of ``votes`` (2018, sections 4-5).

    Every query pays the selection step; answered ones also pay GNMax with ``sigma2``.

    Args:
        answered: boolean ``(N,)`` mask of the queries that were answered in the run (e.g.
            ``labels >= 0`` from :func:`confident_gnmax`). ``None`` gives the *expected* cost the
            2018 paper's Table 2 reports: GNMax's cost weighted by each query's chance of being
            answered, and the expected number of answers.
    """
    orders = _orders(orders)
    delta = _check_delta(delta)
    counts = check_votes(votes)
    step1 = rdp_threshold_data_dependent(counts, threshold, sigma1, orders)
    step2 = rdp_gnmax_data_dependent(counts, sigma2, orders)
    if answered is None:
        weight = np.exp(logpr_answered(counts, threshold, sigma1))
    else:
        weight = np.asarray(answered.cpu() if isinstance(answered, torch.Tensor) else answered, dtype=bool)
        if weight.shape != (len(counts),):
            raise GibbonInputError(f"pate: answered must be one flag per query, shape ({len(counts)},), "
                                   f"got {weight.shape}")
        weight = weight.astype(np.float64)
    dd, odd = eps_from_rdp(step1.sum(axis=0) + weight @ step2, orders, delta)
    indep = len(counts) * rdp_threshold_data_independent(sigma1, orders) + weight.sum() * \
        rdp_gnmax_data_independent(sigma2, orders)
    di, odi = eps_from_rdp(indep, orders, delta)
    return PrivacyCost("Confident-GNMax", delta, len(counts), float(weight.sum()), dd, di, odd, odi,
                       expected=answered is None)


# ---------------------------------------------------------------------------------- student

@dataclass(frozen=True)
class PATEResult:
    """One PATE run: queries, how good the released labels are, what they cost, the student."""

    aggregator: str
    queries: int
    answered: int
    label_accuracy: float  # released labels vs the public inputs' true labels (answered only)
    ensemble_accuracy: float  # noiseless plurality vote vs truth, all queries
    privacy: PrivacyCost
    student_accuracy: float | None
    settings: dict

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["privacy"] = self.privacy.to_dict()
        return out


def train_student(public_x, labels, test=None, *, arch: str, dataset, epochs: int = 60, batch_size: int = 32,
                  lr: float = 1e-3, seed: int = 0, semi_supervised: bool = False, vat_eps: float = 2.0,
                  device=None):
    """Train a zoo ``arch`` student on the answered queries (``labels >= 0``, -1 = not answered or not
    asked; one label per row of ``public_x``); returns ``(model, test accuracy)``.

    ``semi_supervised=True`` adds VAT (Miyato et al. 2018, arXiv:1704.03976) over all of
    ``public_x`` with labels hidden (:func:`gibbon.defenses.vat.vat_semi_supervised_objective`):
    the 2017 paper's student is semi-supervised too (a GAN), which is where most of its accuracy
    comes from.
    """
    from gibbon import zoo
    from gibbon.data import Dataset

    labels = torch.as_tensor(labels).long()
    if labels.shape != (len(public_x),):
        raise GibbonInputError(f"pate: one label per public input, -1 where none was released; got "
                               f"{tuple(labels.shape)} labels for {len(public_x)} inputs")
    keep = labels >= 0
    if int(keep.sum()) == 0:
        raise GibbonInputError("pate: no query was answered, nothing to train a student on; lower the threshold")
    classes = tuple(getattr(dataset, "classes", tuple(str(i) for i in range(int(labels.max()) + 1))))
    labelled = Dataset("pate-labels", "train", public_x[keep], labels[keep], classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = zoo.build(arch, dataset)
    if semi_supervised:
        from gibbon.defenses.vat import vat_semi_supervised_objective

        unlabelled = Dataset("pate-public", "train", public_x, torch.zeros(len(public_x), dtype=torch.long), classes)
        steps = epochs * math.ceil(len(labelled) / batch_size)  # as many steps as the supervised run
        objective = vat_semi_supervised_objective(labelled, eps=vat_eps, labelled_batch_size=batch_size)
        u_epochs = max(1, round(steps / math.ceil(len(unlabelled) / (4 * batch_size))))
        zoo.fit(model, unlabelled, epochs=u_epochs, batch_size=4 * batch_size, lr=lr, objective=objective,
                seed=seed, progress=False, device=device)
    else:
        zoo.fit(model, labelled, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=False,
                device=device)
    return model, (zoo.accuracy(model, test) if test is not None else None)


def run_pate(votes, public_y=None, *, aggregator: str = "confident-gnmax", gamma: float = 0.05,
             threshold: float = 200.0, sigma1: float = 150.0, sigma2: float = 40.0, queries: int | None = None,
             delta: float = 1e-5, orders=None, seed: int = 0, public_x=None, test=None, student_arch=None,
             dataset=None, student_epochs: int = 60, semi_supervised: bool = False, device=None) -> PATEResult:
    """Aggregate the first ``queries`` rows of ``votes``, account for them and (optionally) train a student.

    Args:
        votes: ``(N, K)`` vote histograms (from :func:`train_teachers` or :func:`load_votes`).
        public_y: true labels of the public inputs, only to *measure* label accuracy.
        aggregator: ``"lnmax"`` (with ``gamma``), ``"gnmax"`` (``sigma2``) or ``"confident-gnmax"``
            (``threshold``, ``sigma1``, ``sigma2``).
        seed: seeds the aggregator's noise (a private ``torch.Generator``) and the student.
        public_x, test, student_arch, dataset: give all four to train and test a student. ``public_x``
            holds all public inputs, row ``i`` the one ``votes[i]`` voted on; those past ``queries``
            are never asked and only a ``semi_supervised`` student sees them (unlabelled).

    Returns:
        A :class:`PATEResult`; the privacy of Confident-GNMax is that of the realised answers.
    """
    counts = check_votes(votes)
    if queries is not None:
        if int(queries) != queries or not 1 <= queries <= len(counts):
            raise GibbonInputError(f"pate: queries must be a whole number in [1, {len(counts)}], got {queries!r}")
        counts = counts[:int(queries)]
    gen = torch.Generator().manual_seed(int(seed))
    if aggregator == "lnmax":
        labels = lnmax(counts, gamma=gamma, generator=gen)
        privacy = lnmax_privacy(counts, gamma=gamma, delta=delta, orders=orders)
        settings = {"gamma": gamma}
    elif aggregator == "gnmax":
        labels = gnmax(counts, sigma=sigma2, generator=gen)
        privacy = gnmax_privacy(counts, sigma=sigma2, delta=delta, orders=orders)
        settings = {"sigma": sigma2}
    elif aggregator == "confident-gnmax":
        labels = confident_gnmax(counts, threshold=threshold, sigma1=sigma1, sigma2=sigma2, generator=gen)
        privacy = confident_gnmax_privacy(counts, labels >= 0, threshold=threshold, sigma1=sigma1, sigma2=sigma2,
                                          delta=delta, orders=orders)
        settings = {"threshold": threshold, "sigma1": sigma1, "sigma2": sigma2}
    else:
        raise GibbonInputError(f"pate: aggregator must be lnmax, gnmax or confident-gnmax, got {aggregator!r}")
    answered = labels >= 0
    label_acc = ensemble_acc = float("nan")
    if public_y is not None:
        truth = torch.as_tensor(public_y).long()[:len(counts)]
        if int(answered.sum()):
            label_acc = float((labels[answered] == truth[answered]).double().mean())
        ensemble_acc = float((torch.as_tensor(counts).argmax(dim=1) == truth).double().mean())
    student_acc = None
    if public_x is not None and student_arch is not None and test is not None:
        # public inputs beyond the queries stay unlabelled (-1): only semi-supervised students see them
        padded = torch.full((len(public_x),), -1, dtype=torch.long)
        padded[:len(labels)] = labels
        _, student_acc = train_student(public_x, padded, test, arch=student_arch,
                                       dataset=dataset if dataset is not None else test, epochs=student_epochs,
                                       seed=seed, semi_supervised=semi_supervised, device=device)
    settings.update({"delta": delta, "seed": seed, "student_arch": student_arch, "student_epochs": student_epochs,
                     "semi_supervised": semi_supervised})
    return PATEResult(aggregator, len(counts), int(answered.sum()), label_acc, ensemble_acc, privacy, student_acc,
                      settings)


__all__ = ["DEFAULT_ORDERS", "MOMENTS_2017_ORDERS", "check_votes", "partition", "votes_from_predictions",
           "train_teachers", "save_votes", "load_votes", "lnmax", "gnmax", "confident_gnmax", "logq_gnmax",
           "logq_lnmax", "rdp_gnmax_data_independent", "rdp_threshold_data_independent", "rdp_from_logq",
           "rdp_gnmax_data_dependent", "logpr_answered", "rdp_threshold_data_dependent", "rdp_lnmax_data_dependent",
           "eps_from_rdp", "PrivacyCost", "lnmax_privacy", "gnmax_privacy", "confident_gnmax_privacy", "PATEResult",
           "train_student", "run_pate"]

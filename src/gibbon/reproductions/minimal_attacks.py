"""Reproductions of the minimal-perturbation and few-pixel attack papers on MNIST.

* ``moosavi2016-deepfool``: DeepFool's robustness estimate rho on FC 500-150 and LeNet,
  against FGSM's at 90% success (arXiv:1511.04599, table 1).
* ``carlini2017-cw``: C&W L2, 100 images x 9 targets on LeNet-5 (arXiv:1608.04644, table IV):
  its best case, and its untargeted version, against DeepFool and the L2 fast gradient method.
* ``carlini2017-cw-paper-net``: the same 900 attacks on the paper's own network and training,
  where the average case is held to <= 2.0 too.
* ``papernot2016-jsma``: JSMA, 100 images x 9 targets on LeNet-5 (arXiv:1511.07528, section V).
* ``su2019-onepixel``: the few-pixel attack at 1, 3 and 5 pixels on LeNet-5 (arXiv:1710.08864);
  the paper has no MNIST numbers, so the success rates are recorded.

Every model is trained once by :func:`gibbon.zoo.trained` (cached) with Adam (lr 1e-3, batch
128) on the 50,000 MNIST training images. :mod:`gibbon.reproduce` imports this module at its
end, so ``Target`` and ``_row`` are imported inside the functions (no circular import).
"""

from __future__ import annotations

import torch

#: Training epochs of the cached MNIST models (Adam, lr 1e-3): ~98% (FC) and ~99% (LeNet-5) test accuracy.
EPOCHS = {"fc-500-150": 5, "lenet5": 5}
#: Images per forward/backward pass in the helpers below.
BATCH = 500
#: Generations of the few-pixel differential evolution: the paper's 100 (the reproduction then
#: takes about 11 min on 2 CPU cores; the attack runs at the forward-pass floor).
ONE_PIXEL_ITERATIONS = 100
ONE_PIXEL_POPULATION = 400
#: C&W L2 budget of the reproduction: the issue's 5 search steps x 200 iterations, with a learning
#: rate and first constant that fit that budget (see :func:`carlini2017_cw`).
CW_SETTINGS = {"steps": 200, "lr": 0.05, "binary_search_steps": 5, "initial_const": 1e-2, "abort_early": True}


def _model(arch: str, seed: int, device: str):
    from gibbon import zoo

    path = zoo.trained(arch, "mnist", epochs=EPOCHS[arch], seed=seed, progress=False)
    return zoo.load(path, device=device).eval()


def _predict(model, x: torch.Tensor, device: str) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + BATCH].to(device)).argmax(1).cpu() for i in range(0, len(x), BATCH)])


def _attack(model, attack, x, y, *, device, norm, target=None, eps=None, seed=0, batch_size=BATCH):
    """``x_adv`` of ``attack`` over ``(x, y[, target])`` in batches; batch ``i`` uses seed ``seed + i``."""
    out = []
    for i, start in enumerate(range(0, len(x), batch_size)):
        sl = slice(start, start + batch_size)
        t = target[sl].to(device) if target is not None else None
        out.append(attack(model, x[sl].to(device), y[sl].to(device), eps=eps, norm=norm, target=t,
                          bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(seed + i)).detach().cpu())
    return torch.cat(out)


def _l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def _fgsm_at_90(model, x, y, *, device):
    """Smallest common L-inf FGSM eps (bisection on [0, 1]) fooling >= 90% of ``(x, y)``.

    Returns ``(eps, fooled[N], x_adv)``; eps is None where even eps 1 fools fewer than 90%.
    """
    from gibbon.attacks import FGSM

    def run(eps):
        x_adv = _attack(model, FGSM(), x, y, device=device, norm="linf", eps=eps)
        return _predict(model, x_adv, device) != y, x_adv

    fooled, x_adv = run(1.0)
    if fooled.float().mean() < 0.9:
        return None, fooled, x_adv
    lo, hi = 0.0, 1.0
    for _ in range(14):  # eps to within 1e-4
        mid = (lo + hi) / 2
        if run(mid)[0].float().mean() >= 0.9:
            hi = mid
        else:
            lo = mid
    return (hi, *run(hi))


def moosavi2016_deepfool(seed=0, device="cpu") -> list:
    """Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to fool
    deep neural networks" (arXiv:1511.04599), table 1, MNIST: DeepFool's robustness
    rho = mean ||r||_2 / ||x||_2 is 0.11 on FC 500-150 and 0.20 on LeNet, far below the fast
    gradient sign method's 0.39 and 1.0 (FGSM: the smallest eps misclassifying 90% of the data).

    Here: DeepFool L2 (overshoot 0.02, 50 steps, 10 candidate classes) on the first 1,000 test
    images; rho averages over the correctly classified images it fools. FGSM: the smallest
    common L-inf eps (bisection) fooling >= 90% of the correctly classified images; its rho is
    that of the actual (box-clipped) perturbations of the images fooled at that eps.
    """
    from gibbon import data as gdata
    from gibbon.attacks import DeepFool
    from gibbon.reproductions._common import _row

    test = gdata.load("mnist", "test", n=1000)
    x, y = test.x, test.y
    x_norm = _l2(x)
    rows = []
    for arch, name, paper_df, paper_fgsm in (("fc-500-150", "FC 500-150", 0.11, 0.39), ("lenet5", "LeNet", 0.20, 1.0)):
        model = _model(arch, seed, device)
        correct = _predict(model, x, device) == y
        rows.append(_row(f"{name}: clean accuracy (first 1,000 test)", "-", correct.float().mean(), ">= 97%",
                         correct.float().mean() >= 0.97))
        x_adv = _attack(model, DeepFool(overshoot=0.02), x, y, device=device, norm="l2")
        fooled = (_predict(model, x_adv, device) != y) & correct
        success = fooled.sum() / correct.sum()
        rho_df = float((_l2(x_adv - x) / x_norm)[fooled].mean())
        rows.append(_row(f"{name}: DeepFool success (correctly classified)", "-", success, ">= 99%", success >= 0.99))
        band = f"[{0.7 * paper_df:.3f}, {1.3 * paper_df:.3f}] (30%)"
        rows.append(_row(f"{name}: DeepFool rho", paper_df, rho_df, band, 0.7 * paper_df <= rho_df <= 1.3 * paper_df))
        xc, yc, nc = x[correct], y[correct], x_norm[correct]
        eps90, fooled_fgsm, x_fgsm = _fgsm_at_90(model, xc, yc, device=device)
        if eps90 is None:
            rows.append(_row(f"{name}: FGSM reaches 90% success at eps <= 1", "yes", fooled_fgsm.float().mean(),
                             ">= 90%", False))
            continue
        rho_fgsm = float((_l2(x_fgsm - xc) / nc)[fooled_fgsm].mean())
        rows.append(_row(f"{name}: FGSM eps at 90% success", "-", eps90, "record", True))
        rows.append(_row(f"{name}: FGSM rho at 90% success (clipped perturbations)", paper_fgsm, rho_fgsm,
                         "> DeepFool rho", rho_fgsm > rho_df))
        rows.append(_row(f"{name}: FGSM rho, unclipped eps*sqrt(d)/||x||", paper_fgsm,
                         float((eps90 * xc[0].numel() ** 0.5 / nc)[fooled_fgsm].mean()), "record", True))
        rows.append(_row(f"{name}: DeepFool rho / FGSM rho", round(paper_df / paper_fgsm, 2), rho_df / rho_fgsm,
                         "<= 0.5", rho_df / rho_fgsm <= 0.5))
    return rows


def _all_targets(y: torch.Tensor, classes: int = 10):
    """Each sample repeated ``classes - 1`` times with every other class as its target."""
    shift = torch.arange(1, classes).repeat(len(y))
    y_rep = y.repeat_interleave(classes - 1)
    return y_rep, (y_rep + shift) % classes


def _fgm_l2_minimal(model, x, y, *, device, step=0.05, top=10.0):
    """Per sample, the smallest L2 fast-gradient radius on a grid ``step, 2 step, ..., top``
    that misclassifies it; returns ``(fooled[N], distance[N])`` (actual, box-clipped L2)."""
    from gibbon.attacks import FGSM

    fooled = torch.zeros(len(x), dtype=torch.bool)
    dist = torch.full((len(x),), float("inf"))
    for k in range(1, int(round(top / step)) + 1):
        x_adv = _attack(model, FGSM(), x, y, device=device, norm="l2", eps=k * step)
        new = (_predict(model, x_adv, device) != y) & ~fooled
        dist[new] = _l2(x_adv - x)[new]
        fooled |= new
        if bool(fooled.all()):
            break
    return fooled, dist


def carlini2017_cw(seed=0, device="cpu") -> list:
    """Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks"
    (arXiv:1608.04644), table IV, MNIST: the L2 attack succeeds on 100% of targeted attacks with
    mean L2 1.36 (best case: easiest target per image), 1.76 (average case) and 2.60 (worst case),
    smaller than the other attacks' (DeepFool, fast gradient sign).

    Here: LeNet-5, the first 100 test images x their 9 other classes (900 targeted attacks),
    C&W L2 with 5 binary-search steps of 200 Adam steps (abort early), lr 0.05 and initial c
    1e-2 (:data:`CW_SETTINGS`). The paper's lr 0.01 and c 1e-3 are made for 9 x 10,000 steps:
    in 200 steps at lr 0.01 a black pixel (w = -3.8 in tanh space) cannot move past ~0.03, and
    c reaches 10 only in the fifth search step (measured: 98.3% success, mean L2 2.62 on 20 x 9).

    The issue's target, "mean L2 <= 2.0 (paper best case 1.36), smaller than DeepFool's and
    FGSM's", is the best case: the mean over images of the easiest target's L2. DeepFool and the
    L2 fast gradient method are untargeted, so they are compared with that best case (and with
    C&W untargeted, same settings) on the images all of them fool. The average case (paper 1.76)
    is recorded: converged C&W gives 2.20 on this LeNet-5, and ``carlini2017-cw-paper-net`` holds
    it to <= 2.0 on the paper's own network and training (``docs/reproduction.md``).
    """
    from gibbon import data as gdata
    from gibbon.attacks import CWL2, DeepFool
    from gibbon.reproductions._common import _row

    model = _model("lenet5", seed, device)
    test = gdata.load("mnist", "test", n=100)
    x, y = test.x, test.y
    correct = _predict(model, x, device) == y
    cw = CWL2(**CW_SETTINGS)

    accuracy = float(correct.float().mean())
    hit, dist = _cw_targeted(model, cw, x, y, device)
    rows = [_row("LeNet-5 clean accuracy (first 100 test)", "-", accuracy, ">= 97%", accuracy >= 0.97),
            *_cw_targeted_rows(hit, dist, average_target=None)]
    x_cw = _attack(model, cw, x, y, device=device, norm="l2", batch_size=100)
    x_df = _attack(model, DeepFool(overshoot=0.02), x, y, device=device, norm="l2", batch_size=100)
    ok_cw = (_predict(model, x_cw, device) != y) & correct
    ok_df = (_predict(model, x_df, device) != y) & correct
    ok_fgm, d_fgm = _fgm_l2_minimal(model, x, y, device=device)
    ok_fgm &= correct
    best = dist.min(1).values
    common = ok_cw & ok_df & ok_fgm & best.isfinite()
    d_cw, d_df = _l2(x_cw - x)[common].mean(), _l2(x_df - x)[common].mean()
    d_fgm, d_best = d_fgm[common].mean(), best[common].mean()
    rows += [
        _row("C&W L2 untargeted success (correctly classified)", "-", ok_cw.sum() / correct.sum(), ">= 99%",
             ok_cw.sum() / correct.sum() >= 0.99),
        _row(f"C&W L2 best case mean L2 ({int(common.sum())} images all attacks fool)", 1.36, d_best, "record", True),
        _row("C&W L2 untargeted mean L2 (same images)", "-", d_cw, "record", True),
        _row("DeepFool L2 mean L2 (same images)", "-", d_df, "> both C&W", d_df > max(d_cw, d_best)),
        _row("FGM-L2 minimal radius mean L2 (same images, grid 0.05)", "-", d_fgm, "> both C&W",
             d_fgm > max(d_cw, d_best)),
    ]
    return rows


def _cw_targeted(model, cw, x, y, device) -> tuple[torch.Tensor, torch.Tensor]:
    """C&W on every image x its 9 other classes, one batch of 9N: ``(hit, dist)``, both ``[N, 9]``;
    ``dist`` is the L2 of each successful attack and inf where the target was missed."""
    x_rep = x.repeat_interleave(9, dim=0)
    y_rep, t_rep = _all_targets(y)
    x_adv = _attack(model, cw, x_rep, y_rep, target=t_rep, device=device, norm="l2", batch_size=len(x_rep))
    hit = _predict(model, x_adv, device) == t_rep
    dist = _l2(x_adv - x_rep).masked_fill(~hit, float("inf"))
    return hit.reshape(len(y), 9), dist.reshape(len(y), 9)


def _cw_targeted_rows(hit: torch.Tensor, dist: torch.Tensor, *, average_target: float | None) -> list:
    """Table IV's targeted rows from :func:`_cw_targeted`: success, then the mean L2 in the best
    case (easiest target per image; the issue's <= 2.0), the average case (every successful
    target; held to ``average_target`` when given, else recorded) and the worst case."""
    from gibbon.reproductions._common import _row

    n = len(hit)
    best, worst = dist.min(1).values, dist.max(1).values
    best_l2, mean_l2 = float(best[best.isfinite()].mean()), float(dist[hit].mean())
    held = average_target is not None
    return [
        _row(f"C&W L2 targeted success ({n} images x 9 targets)", "100%", hit.float().mean(), ">= 99%",
             hit.float().mean() >= 0.99),
        _row("C&W L2 targeted best case mean L2 (easiest target per image)", 1.36, best_l2, "<= 2.0",
             best_l2 <= 2.0),
        _row("C&W L2 targeted average case mean L2 (all successful targets)", 1.76, mean_l2,
             f"<= {average_target}" if held else "record", not held or mean_l2 <= average_target),
        _row("C&W L2 targeted worst case mean L2 (hardest target, all 9 hit)", 2.60, worst[hit.all(1)].mean(),
             "record", True),
    ]


#: Carlini & Wagner's training of their MNIST network (train_models.py of their code): 50 epochs
#: of SGD with momentum 0.9 at lr 0.01, batch 128 (their Nesterov momentum and 1e-6 decay are left out).
PAPER_NET_TRAINING = {"epochs": 50, "optimizer": "sgd", "lr": 0.01, "batch_size": 128}


def carlini2017_cw_paper_net(seed=0, device="cpu") -> list:
    """Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks"
    (arXiv:1608.04644), table IV, MNIST, on the paper's own network and training: 100% targeted
    success, mean L2 1.36 best / 1.76 average / 2.60 worst case.

    Here: ``carlini-mnist`` (conv 32-32-64-64, fc 200-200, dropout 0.5: table I of the paper)
    trained as their code does (:data:`PAPER_NET_TRAINING`; 16 s an epoch on 2 idle CPU cores,
    28 min in all when other jobs shared them), the
    first 100 test images x their 9 other classes, the same attack budget as ``carlini2017-cw``
    (:data:`CW_SETTINGS`). It tells the model's share of ``carlini2017-cw``'s gap from the
    attack's. Measured on these 900 attacks (``benchmarks/cw_budget.py --model``): LeNet-5 2.198
    (5 epochs of Adam) and 2.059 (this recipe), carlini-mnist 2.123 (Adam), 1.982 (this recipe) and
    2.011 (this recipe with Nesterov momentum), all with the restart of every search round: the
    target is met by less than nearby trainings differ. With the default warm-started rounds
    (2026-12-03, recipe retrained on an AMD EPYC machine): 1.971 against the restart's 2.008;
    retrained again on 2026-12-06, with C&W's two-speed abort: 1.959 (best case 1.312).
    """
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import CWL2
    from gibbon.reproductions._common import _row

    path = zoo.trained("carlini-mnist", "mnist", seed=seed, progress=False, **PAPER_NET_TRAINING)
    model = zoo.load(path, device=device).eval()
    test = gdata.load("mnist", "test", n=100)
    accuracy = float((_predict(model, test.x, device) == test.y).float().mean())
    return [_row("carlini-mnist clean accuracy (first 100 test; paper: 99.5% on all)", "-", accuracy, ">= 97%",
                 accuracy >= 0.97),
            *_cw_targeted_rows(*_cw_targeted(model, CWL2(**CW_SETTINGS), test.x, test.y, device),
                               average_target=2.0)]


def papernot2016_jsma(seed=0, device="cpu") -> list:
    """Papernot, McDaniel, Jha, Fredrikson, Celik & Swami 2016, "The Limitations of Deep
    Learning in Adversarial Settings" (arXiv:1511.07528), section V: JSMA (theta = +1,
    gamma = 14.5%) reaches 97% of the targets on a LeNet MNIST model, changing 4.02% of the
    pixels on average.

    Here: LeNet-5, the first 100 test images x their 9 other classes (900 targeted attacks),
    JSMA with the paper's theta = 1 and gamma = 0.145 and the paper's forward derivative, that
    of the network's output F = softmax (``use_logits=False``, JSMA-F in Carlini & Wagner's
    terms); the fraction of changed pixels averages over the successful attacks. The logits'
    saliency (JSMA-Z, CleverHans' choice and gibbon's default) is weaker on this model:
    measured 79.7% success changing 6.01% of the pixels on the same 900 attacks.
    """
    from gibbon import data as gdata
    from gibbon.attacks import JSMA
    from gibbon.reproductions._common import _row

    model = _model("lenet5", seed, device)
    test = gdata.load("mnist", "test", n=100)
    x_rep = test.x.repeat_interleave(9, dim=0)
    y_rep, t_rep = _all_targets(test.y)
    x_adv = _attack(model, JSMA(theta=1.0, max_distortion=0.145, use_logits=False), x_rep, y_rep, target=t_rep,
                    device=device,
                    norm="l0", batch_size=900)
    hit = _predict(model, x_adv, device) == t_rep
    changed = (x_adv != x_rep).flatten(1).float().mean(1)
    success, frac = hit.float().mean(), changed[hit].mean()
    return [_row("JSMA-F success (100 images x 9 targets)", "97%", success, ">= 90%", success >= 0.90),
            _row("JSMA-F mean fraction of pixels changed (successful)", "4.02%", frac, "<= 6%", frac <= 0.06)]


def su2019_onepixel(seed=0, device="cpu") -> list:
    """Su, Vargas & Sakurai 2019, "One Pixel Attack for Fooling Deep Neural Networks"
    (arXiv:1710.08864): differential evolution (population 400, 100 generations, F = 0.5)
    changing 1, 3 or 5 pixels. The paper evaluates CIFAR-10 and ImageNet only, so on MNIST the
    untargeted success rates are recorded and checked to grow with the number of pixels.

    Here: LeNet-5, the first 100 correctly classified test images, untargeted, population 400,
    100 generations (:data:`ONE_PIXEL_ITERATIONS`), as the paper.
    """
    from gibbon import data as gdata
    from gibbon.attacks import OnePixel
    from gibbon.reproductions._common import _row

    model = _model("lenet5", seed, device)
    test = gdata.load("mnist", "test", n=200)
    keep = (_predict(model, test.x, device) == test.y).nonzero().squeeze(1)[:100]
    x, y = test.x[keep], test.y[keep]
    rates = []
    rows = []
    for pixels in (1, 3, 5):
        attack = OnePixel(pixels=pixels, population=ONE_PIXEL_POPULATION, iterations=ONE_PIXEL_ITERATIONS)
        x_adv = _attack(model, attack, x, y, device=device, norm="l0", seed=seed, batch_size=100)
        rate = float((_predict(model, x_adv, device) != y).float().mean())
        rates.append(rate)
        rows.append(_row(f"{pixels}-pixel untargeted success (100 correct test images)", "- (no MNIST)", rate,
                         "record", True))
    monotone = rates[0] <= rates[1] <= rates[2]
    rows.append(_row("success non-decreasing in pixels (1 <= 3 <= 5)", "-", float(monotone), "true", monotone))
    return rows


def targets() -> list:
    """The :class:`gibbon.reproductions._common.Target` s of this module."""
    from gibbon.reproductions._common import Target

    return [
        Target("moosavi2016-deepfool", "Moosavi-Dezfooli et al. 2016",
               "DeepFool rho 0.11 (FC 500-150) / 0.20 (LeNet), far below FGSM's 0.39 / 1.0", moosavi2016_deepfool),
        Target("carlini2017-cw", "Carlini & Wagner 2017",
               "C&W L2 targeted: 100% success, mean L2 1.36 in the best case (1.76 average)", carlini2017_cw),
        Target("carlini2017-cw-paper-net", "Carlini & Wagner 2017",
               "the same on the paper's own MNIST network and training: average case <= 2.0",
               carlini2017_cw_paper_net),
        Target("papernot2016-jsma", "Papernot et al. 2016", "JSMA: 97% success changing 4.02% of the pixels",
               papernot2016_jsma),
        Target("su2019-onepixel", "Su, Vargas & Sakurai 2019", "few-pixel attack success at 1, 3, 5 pixels (recorded)",
               su2019_onepixel),
    ]

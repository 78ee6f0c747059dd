"""Reproductions of the black-box attack papers on MNIST.

* ``papernot2017-substitute``: Papernot et al. 2017 (arXiv:1602.02697), the substitute attack
  against a CNN oracle seen through its labels only.
* ``papernot2016-transferability``: Papernot, McDaniel & Goodfellow 2016 (arXiv:1605.07277), the
  cross-technique transferability matrix (DNN, LR, SVM, DT, kNN).
* ``tramer2017-gaas``: Tramèr et al. 2017 (arXiv:1704.03453), the dimension of the adversarial
  and of the transferable subspace for a fully connected net and a CNN.
"""

from __future__ import annotations

import torch

#: Oracle and substitutes of the reproduction: a CNN trained here (Tramer et al.'s model B, the
#: CleverHans basic CNN of the library's own black-box tutorial), the MLP 200-200 of CleverHans'
#: tutorial, and the paper's substitute architecture A trained as section 4.1 says (10 epochs of
#: SGD, lr 1e-2, momentum 0.9, from scratch every substitute epoch).
ORACLE_ARCH, ORACLE_EPOCHS, SUBSTITUTE_ARCH = "tramer-b", 2, "mlp-200-200"
PAPER_SUBSTITUTE, PAPER_TRAINING = "papernot-a", {"optimizer": "sgd", "lr": 1e-2, "restart": True}
SEED_IMAGES, ROUNDS, STEP, EPS = 150, 6, 0.1, 0.3
#: Pixels by which the held substitute's training copies are shifted (gibbon.data.augment): no queries.
SHIFT = 2
#: Images attacked: test images after the seed set (disjoint from it).
N_EVAL = 2000


def papernot2017_substitute(seed=0, device="cpu") -> list:
    """Papernot, McDaniel, Goodfellow, Jha, Celik & Swami 2017, "Practical Black-Box Attacks
    against Machine Learning" (arXiv:1602.02697), section 4: a substitute DNN trained from 150
    seed images with Jacobian-based augmentation (rho = 6 substitute epochs, lambda 0.1, sign
    flipped every 3), then FGSM at eps 0.3 crafted on it, misclassified 84.24% of the time by
    MetaMind's oracle after 6,400 labels.

    Here: the oracle is Tramer et al.'s model B trained 2 epochs on MNIST (labels only, counted
    queries); seeds are the first 150 MNIST test images, the attacked images the next 2,000.
    Algorithm 1 as written (the paper's reading, see :mod:`gibbon.transfer.substitute`: six
    augmentations, the gradient of the substitute's probability of the oracle's label) runs
    three times, on 9,600 oracle labels each time:

    * **The paper's substitute** (held, target: the oracle's accuracy on the transferred
      examples <= 30%): architecture A (``papernot-a``: conv 32, conv 64, fc 200-200; 3x3
      kernels, which the paper's table does not state), trained for 10 epochs from scratch each
      substitute epoch with SGD, lr 1e-2, momentum 0.9. ``seed`` 0-4 (oracle and substitute):
      24.35 / 13.30 / 15.15 / 17.30 / 14.60% (mean 16.9%), substitute accuracy 88.6-89.9%.
    * The MLP 200-200 of CleverHans' tutorial (10 epochs of Adam, lr 1e-3, batch 128 per round,
      training continued; recorded): 35.4 / 25.8 / 25.3 / 38.6 / 33.4% on seeds 0-4.
    * That MLP trained on copies shifted by up to 2 pixels (``shift=2``, no queries;
      :mod:`gibbon.data.augment`; not in the paper, recorded): 21.1-24.3%.

    With 2x2 kernels, A leaves 43.6% (mean of seeds 0-4), with 5x5 kernels 9.7% (seeds 0-2):
    the kernel size the paper leaves out moves the result more than anything else in the
    setting (``benchmarks/substitute_architectures.py``).

    The same FGSM from an MLP trained on all 50,000 images leaves 14.5%. How much is left
    depends most on the oracle: Algorithm 1 as written leaves 45.7% on LeNet-5 (5 epochs) and
    72.3% on Madry et al.'s CNN; the shifted copies take these to 37.2% and 60.7% (3 seeds;
    ``benchmarks/substitute_training.py``, which also lists the training variants that did not help).
    """
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.reproductions._common import _row
    from gibbon.transfer import substitute_attack

    target_model = zoo.load(zoo.trained(ORACLE_ARCH, "mnist", epochs=ORACLE_EPOCHS, seed=seed, progress=False),
                            device=device).eval()
    test = gdata.load("mnist", "test", n=SEED_IMAGES + N_EVAL)
    seeds, x, y = test.x[:SEED_IMAGES].to(device), test.x[SEED_IMAGES:].to(device), test.y[SEED_IMAGES:].to(device)

    def attack(arch: str, shift: int = 0, **training):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            substitute = zoo.build(arch, test).to(device)
        return substitute_attack(Oracle(target_model, output="label"), seeds, substitute, x, y, FGSM(), eps=EPS,
                                 rounds=ROUNDS, step=STEP, shift=shift, seed=seed, classes=test.classes, **training)

    paper = attack(PAPER_SUBSTITUTE, **PAPER_TRAINING)
    plain, shifted = attack(SUBSTITUTE_ARCH), attack(SUBSTITUTE_ARCH, SHIFT)
    written = "Algorithm 1 as written, the paper's substitute A (SGD from scratch each round)"
    held = f"MLP 200-200 on copies shifted <= {SHIFT} px (not in the paper)"
    return [
        _row(f"oracle ({ORACLE_ARCH}) clean accuracy (2,000 test images)", "-", plain.oracle_accuracy, ">= 97%",
             plain.oracle_accuracy >= 0.97),
        _row(f"{written}: oracle labels asked", "6,400 (MetaMind)", paper.queries, "record", True),
        _row(f"{written}: substitute accuracy (true labels)", "81.20% (MetaMind substitute)",
             paper.substitute_accuracy, "record", True),
        _row(f"{written}: oracle accuracy on FGSM eps 0.3", "15.76% (84.24% misclassified)",
             paper.adversarial_accuracy, "<= 30%", paper.adversarial_accuracy <= 0.30),
        _row(f"{written}: transfer success (oracle-correct images now misclassified)", "84.24%",
             paper.transfer_success, "record", True),
        _row("Algorithm 1 as written, MLP 200-200 (CleverHans' tutorial): substitute accuracy", "81.20%",
             plain.substitute_accuracy, "record", True),
        _row("Algorithm 1 as written, MLP 200-200: oracle accuracy on FGSM eps 0.3", "15.76%",
             plain.adversarial_accuracy, "record", True),
        _row(f"{held}: oracle labels asked", "-", shifted.queries, f"= {plain.queries} (no more)",
             shifted.queries == plain.queries),
        _row(f"{held}: substitute accuracy (true labels)", "81.20% (MetaMind substitute)",
             shifted.substitute_accuracy, "record", True),
        _row(f"{held}: substitute-oracle agreement", "-", shifted.agreement, "record", True),
        _row(f"{held}: oracle accuracy on FGSM eps 0.3", "15.76% (84.24% misclassified)",
             shifted.adversarial_accuracy, "record", True),
        _row(f"{held}: transfer success (oracle-correct images now misclassified)", "84.24%",
             shifted.transfer_success, "record", True),
    ]


TECHNIQUES = (("LR", "lr"), ("SVM", "svm-linear"), ("DT", "tree"), ("kNN", "knn"))


def papernot2016_transferability(seed=0, device="cpu") -> list:
    """Papernot, McDaniel & Goodfellow 2016, "Transferability in Machine Learning: from Phenomena
    to Black-Box Attacks using Adversarial Samples" (arXiv:1605.07277), section 3.2, figure 3:
    adversarial examples transfer substantially across learning techniques (DNN, logistic
    regression, SVM, decision tree, nearest neighbours), and the LR, SVM and DT targets are more
    vulnerable than the DNN.

    Here: FGSM at eps 0.3 on 1,000 MNIST test images (after 150 seed images). Sources: the DNN is
    Madry et al.'s CNN (2 epochs) and LR gibbon's softmax regression (5 epochs), both attacked
    white-box; SVM (linear), DT and kNN are scikit-learn models attacked through an MLP 200-200
    substitute trained from their labels (150 seeds, 5 augmentations: 4,800 labels). Targets: the
    same CNN and the scikit-learn LR, SVM, DT (all 50,000 training images) and kNN (10,000, its
    default subset).
    A cell is the fraction of the target's correctly classified images the examples fool.

    Recorded beside the matrix: the same rate for random signs at the same eps (no attack at
    all), each target's noise floor (:func:`gibbon.transfer.transfer_matrix` reports it). Measured
    (2026-12-06): DNN 3.1%, LR 66.6%, SVM 66.4%, DT 75.3%, kNN 1.4%. So most of what fools LR,
    SVM and DT at eps 0.3 is noise of that size, not transfer, while kNN, like the DNN, shrugs off
    the noise.
    """
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import train_technique
    from gibbon.reproductions._common import _row
    from gibbon.transfer import transfer_matrix

    train, test = gdata.load("mnist", "train"), gdata.load("mnist", "test", n=SEED_IMAGES + 1000)
    dnn = zoo.load(zoo.trained("madry-cnn", "mnist", epochs=2, seed=seed, progress=False), device=device).eval()
    lr = zoo.load(zoo.trained("softmax-regression", "mnist", epochs=5, seed=seed, progress=False),
                  device=device).eval()
    fitted = {name: train_technique(tech, train, seed=seed, test=test) for name, tech in TECHNIQUES}
    sources = {"DNN": dnn, "LR": lr, "SVM": fitted["SVM"], "DT": fitted["DT"], "kNN": fitted["kNN"]}
    m = transfer_matrix(sources, {"DNN": dnn, **fitted}, FGSM(), test.x[SEED_IMAGES:], test.y[SEED_IMAGES:], eps=EPS,
                        seed=seed, substitute_seed_x=test.x[:SEED_IMAGES])
    column = {t: sum(m.rates[s][t] for s in m.sources if s != t) / (len(m.sources) - 1) for t in m.targets}
    cross = [m.rates[s][t] for s in m.sources for t in m.targets if s != t]
    rows = [_row(f"{s} -> {t} transfer rate", "fig. 3", m.rates[s][t], "record", True)
            for s in m.sources for t in m.targets]
    rows += [_row(f"{t} clean accuracy (1,000 test images)", "-", m.clean_accuracy[t], "record", True) for t in m.targets]
    rows += [_row(f"random signs eps {EPS:g} -> {t} (no attack: the noise floor)", "-", m.noise_floor[t], "record",
                  True) for t in m.targets]
    rows += [
        _row("mean cross-technique transfer rate (20 off-diagonal cells)", "substantial", sum(cross) / len(cross),
             ">= 50%", sum(cross) / len(cross) >= 0.5),
        *[_row(f"{t} target: mean transfer rate from the other sources", "above the DNN's", column[t],
               f"> DNN's {column['DNN']:.1%}", column[t] > column["DNN"]) for t in ("LR", "SVM", "DT")],
    ]
    return rows


GAAS_EPS, GAAS_KS = 5.0, (1, 2, 5, 10, 20, 50, 100, 200)


def tramer2017_gaas(seed=0, device="cpu") -> list:
    """Tramèr, Papernot, Goodfellow, Boneh & McDaniel 2017, "The Space of Transferable
    Adversarial Examples" (arXiv:1704.03453), section 3.1: with gradient-aligned adversarial
    subspaces (GAAS), an MNIST fully connected net has about 44 orthogonal adversarial
    directions, 25 of which transfer to another FC net; a CNN has about 15, of which 2 transfer
    to another CNN (their models and L2 budget, not ours: the numbers are recorded side by side).

    Here: FC = the DeepFool paper's 784-500-150-10 MLP (source) and the MLP 200-200 (target);
    CNN = LeNet-5 (source) and Madry et al.'s CNN (target); 100 test images both classify
    correctly; k in 1..200; eps 5 (L2), points clipped into [0, 1]. Checked: the FC net has more
    adversarial directions than the CNN, and more of them transfer.
    """
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.reproductions._common import _row
    from gibbon.transfer import adversarial_subspace

    test = gdata.load("mnist", "test", n=300)
    load = lambda arch, epochs: zoo.load(zoo.trained(arch, "mnist", epochs=epochs, seed=seed, progress=False),  # noqa: E731
                                         device=device).eval()
    pairs = {"FC": (load("fc-500-150", 5), load("mlp-200-200", 5), 44, 25),
             "CNN": (load("lenet5", 5), load("madry-cnn", 2), 15, 2)}
    found = {}
    rows = []
    for name, (source, target, paper_dirs, paper_moved) in pairs.items():
        x, y = test.x.to(device), test.y.to(device)
        with torch.no_grad():
            ok = (source(x).argmax(1) == y) & (target(x).argmax(1) == y)
        result = adversarial_subspace(source, target, x[ok][:100], y[ok][:100], eps=GAAS_EPS, ks=GAAS_KS)
        found[name] = result
        rows += [_row(f"{name}: mean adversarial directions (GAAS, eps 5)", paper_dirs, result.mean_directions,
                      "record", True),
                 _row(f"{name}: of which transfer to the other {name}", paper_moved, result.mean_transferred,
                      "record", True)]
    rows += [_row("FC has more adversarial directions than the CNN", "44 > 15", found["FC"].mean_directions,
                  "> CNN's", found["FC"].mean_directions > found["CNN"].mean_directions),
             _row("more of the FC's directions transfer", "25 > 2", found["FC"].mean_transferred,
                  "> CNN's", found["FC"].mean_transferred > found["CNN"].mean_transferred)]
    return rows


def targets() -> list:
    """The :class:`gibbon.reproductions._common.Target` s of this module."""
    from gibbon.reproductions._common import Target

    return [Target("papernot2017-substitute", "Papernot et al. 2017",
                   "substitute from 150 seeds, rho = 6: FGSM eps .3 fools the oracle 84.24%", papernot2017_substitute),
            Target("papernot2016-transferability", "Papernot, McDaniel & Goodfellow 2016",
                   "cross-technique transfer (DNN, LR, SVM, DT, kNN); LR/SVM/DT more vulnerable than the DNN",
                   papernot2016_transferability),
            Target("tramer2017-gaas", "Tramer et al. 2017",
                   "GAAS: FC 44 directions (25 transfer), CNN 15 (2 transfer)", tramer2017_gaas)]

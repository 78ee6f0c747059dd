"""Reproduction of PATE on MNIST (Papernot et al. 2017, arXiv:1610.05755; Papernot et al. 2018,
arXiv:1802.08908).

* ``papernot2018-pate``: 250 teachers on disjoint shards of the private training set vote on
  the first 9,000 MNIST test images (the student's public data); the last 1,000 test the
  student. LNMax (gamma 0.05) on 100 and 1,000 queries, the 2017 paper's MNIST rows, and
  Confident-GNMax (T = 200, sigma1 = 150, sigma2 = 40) on 640 queries, the 2018 paper's
  Table 2 row, each with its data-dependent epsilon at delta 1e-5.

The teachers' votes are computed once and cached under :func:`gibbon.zoo.cache.cache_root` as an
``.npz`` (no pickle) keyed by the training settings; the teachers are not kept. A rerun only
aggregates, accounts and trains the (small) students.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import torch

#: The papers' MNIST setting on gibbon's 50,000-image train split (the papers: 60,000), and the
#: teacher training our CPU budget allows: LeNet-5 (the papers: 2 conv + 2 fc layers), Adam.
TEACHERS, ARCH, TEACHER_EPOCHS, TEACHER_BATCH, TEACHER_LR = 250, "lenet5", 40, 32, 2e-3
PUBLIC, DELTA = 9000, 1e-5
GAMMA, LNMAX_QUERIES = 0.05, (100, 1000)
THRESHOLD, SIGMA1, SIGMA2, GNMAX_QUERIES = 200.0, 150.0, 40.0, 640
STUDENT_EPOCHS = 60


def _votes_path(config: dict):
    from gibbon.zoo.cache import cache_root

    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"pate-votes-mnist-{key}" / "votes.npz"


def mnist_votes(*, teachers: int = TEACHERS, seed: int = 0, device: str = "cpu") -> dict:
    """The ``(9000, 10)`` vote histograms of ``teachers`` LeNet-5 teachers on MNIST test[:9000]
    (cached); ``{"votes", "predictions", "meta"}`` as :func:`gibbon.privacy.pate.load_votes`."""
    from gibbon import data
    from gibbon.privacy.pate import load_votes, save_votes, train_teachers

    config = {"dataset": "mnist", "teachers": int(teachers), "arch": ARCH, "epochs": TEACHER_EPOCHS,
              "batch_size": TEACHER_BATCH, "lr": TEACHER_LR, "public": PUBLIC, "seed": int(seed)}
    path = _votes_path(config)
    if not path.exists():
        train, test = data.load("mnist", "train"), data.load("mnist", "test")
        out = train_teachers(train, test.x[:PUBLIC], teachers=teachers, arch=ARCH, epochs=TEACHER_EPOCHS,
                             batch_size=TEACHER_BATCH, lr=TEACHER_LR, seed=seed, device=device, progress=True)
        save_votes(path, out["votes"], predictions=out["predictions"], meta={**out["meta"], "config": config})
    return load_votes(path)


def papernot2018_pate(seed=0, device="cpu", teachers: int = TEACHERS) -> list:
    """Papernot, Song, Mironov, Raghunathan, Talwar & Erlingsson 2018, "Scalable Private Learning
    with PATE" (arXiv:1802.08908), Table 2, MNIST rows, and the LNMax rows of Papernot, Abadi,
    Erlingsson, Goodfellow & Talwar 2017 (arXiv:1610.05755), section 4 / Table.

    Paper values: Confident-GNMax (T = 200, sigma1 = 150, sigma2 = 40) answers 286 of 640
    queries for eps 1.97 at delta 1e-5, student 98.5%; LNMax (gamma 0.05) 100 queries eps 2.04,
    student 98.0% (1,000 queries: eps 8.03, 98.1%); non-private baseline 99.2%. The settings (T,
    sigmas, 640 queries, delta) are those of the authors' ``generate_table.sh``
    (tensorflow/privacy, research/pate_2018/ICLR2018).

    Here: 250 LeNet-5 teachers, each on a 200-image shard of gibbon's 50,000 training images (the
    papers: 240 of 60,000), 40 epochs of Adam; votes on test[:9000]; students (LeNet-5, 60
    epochs) tested on test[9000:]. Epsilons are read the way the 2018 paper's Table 2 is: the
    selection step paid by every query and GNMax weighted by each query's chance of an answer
    (expected answers), with the realised run's cost next to it. The 2017 LNMax bound uses its
    moments l = 1..8. Data-dependent epsilons are reported *without* the smooth-sensitivity step
    that would make them releasable.

    The student is where we fall short by design: the papers' students are semi-supervised GANs
    (Salimans et al. 2016) that learn from the 8,700 unlabelled public images too; ours learns
    from the few hundred answered labels (supervised), and a VAT semi-supervised variant over all
    public images is reported next to it. Their accuracies are recorded against a floor, not held
    to 98.5%.

    Measured (seed 0, one CPU thread; teachers 406 s wall / 281 s CPU, the rest 44 s): teachers
    86.3% on average (paper 83.86%), plurality vote 92.8%; Confident-GNMax expected 352 answers
    for eps 1.48 (paper 286, 1.97; data-independent 3.52), this run 338 answers 94.4% right,
    eps 1.42; students 83.5% supervised, 91.6% with VAT; LNMax 100 queries eps 1.80 (paper 2.04),
    labels 95%, students 67.5% / 81.0%; 1,000 queries eps 5.54 (paper 8.03). Our teachers agree
    more than the papers' (higher single-teacher accuracy), so fewer queries fall near ties:
    more answers and lower data-dependent epsilons than the papers'.
    """
    from gibbon import data
    from gibbon.privacy.pate import confident_gnmax_privacy, run_pate
    from gibbon.reproductions._common import _row

    votes_file = mnist_votes(teachers=teachers, seed=seed, device=device)
    votes, preds, meta = votes_file["votes"], votes_file["predictions"], votes_file["meta"]
    test = data.load("mnist", "test")
    public_x, public_y = test.x[:PUBLIC], test.y[:PUBLIC]
    held_out = dataclasses.replace(test, x=test.x[PUBLIC:], y=test.y[PUBLIC:], meta={})
    teacher_acc = float((torch.as_tensor(preds).long() == public_y[None]).double().mean())
    student = dict(public_x=public_x, test=held_out, student_arch=ARCH, dataset=test, student_epochs=STUDENT_EPOCHS,
                   device=device)

    expected = confident_gnmax_privacy(votes[:GNMAX_QUERIES], None, threshold=THRESHOLD, sigma1=SIGMA1,
                                       sigma2=SIGMA2, delta=DELTA)
    conf = run_pate(votes, public_y, aggregator="confident-gnmax", threshold=THRESHOLD, sigma1=SIGMA1,
                    sigma2=SIGMA2, queries=GNMAX_QUERIES, delta=DELTA, seed=seed, **student)
    conf_vat = run_pate(votes, public_y, aggregator="confident-gnmax", threshold=THRESHOLD, sigma1=SIGMA1,
                        sigma2=SIGMA2, queries=GNMAX_QUERIES, delta=DELTA, seed=seed, semi_supervised=True,
                        **student)
    ln100 = run_pate(votes, public_y, aggregator="lnmax", gamma=GAMMA, queries=LNMAX_QUERIES[0], delta=DELTA,
                     seed=seed, **student)
    ln100_vat = run_pate(votes, public_y, aggregator="lnmax", gamma=GAMMA, queries=LNMAX_QUERIES[0], delta=DELTA,
                         seed=seed, semi_supervised=True, **student)
    ln1000 = run_pate(votes, public_y, aggregator="lnmax", gamma=GAMMA, queries=LNMAX_QUERIES[1], delta=DELTA,
                      seed=seed)
    plurality = float((torch.as_tensor(votes).argmax(dim=1) == public_y).double().mean())
    ensemble = conf.ensemble_accuracy  # the plurality vote on the 640 queries
    rows = [
        _row(f"mean single-teacher accuracy ({teachers} teachers, public 9k)", "83.86% (2017, 250 teachers)",
             teacher_acc, ">= 75%", teacher_acc >= 0.75),
        _row("noiseless plurality-vote accuracy (all 9,000 public)", "-", plurality, "> teacher + 3 pts",
             plurality > teacher_acc + 0.03),
        _row("Confident-GNMax expected answers of 640", "286", expected.answered, "record (150-450)",
             150 <= expected.answered <= 450),
        _row("Confident-GNMax expected data-dependent eps (delta 1e-5)", "1.97", expected.eps_data_dependent,
             "<= 4", expected.eps_data_dependent <= 4),
        _row("Confident-GNMax data-independent eps (expected answers)", "-", expected.eps_data_independent,
             "> data-dependent", expected.eps_data_independent > expected.eps_data_dependent),
        _row("Confident-GNMax answers in this run", "286 (expected)", conf.answered, "record", True),
        _row("Confident-GNMax this run's data-dependent eps", "-", conf.privacy.eps_data_dependent, "record", True),
        _row("Confident-GNMax label accuracy (answered)", "-", conf.label_accuracy,
             f"> plurality vote on the 640 ({ensemble:.1%})", conf.label_accuracy > ensemble),
        _row("Confident-GNMax student accuracy (supervised, test[9000:])", "98.5% (semi-sup. GAN)",
             conf.student_accuracy, "record (>= 75%)", conf.student_accuracy >= 0.75),
        _row("Confident-GNMax student accuracy (VAT semi-supervised)", "98.5% (semi-sup. GAN)",
             conf_vat.student_accuracy, "record (>= 85%)", conf_vat.student_accuracy >= 0.85),
        _row("LNMax 100 queries data-dependent eps", "2.04", ln100.privacy.eps_data_dependent, "<= 4",
             ln100.privacy.eps_data_dependent <= 4),
        _row("LNMax 100 queries label accuracy", "-", ln100.label_accuracy, "record", True),
        _row("LNMax 100 queries student accuracy (supervised)", "98.0% (semi-sup. GAN)", ln100.student_accuracy,
             "record (>= 55%)", ln100.student_accuracy >= 0.55),
        _row("LNMax 100 queries student accuracy (VAT semi-supervised)", "98.0% (semi-sup. GAN)",
             ln100_vat.student_accuracy, "record (>= 70%)", ln100_vat.student_accuracy >= 0.70),
        _row("LNMax 1000 queries data-dependent eps", "8.03", ln1000.privacy.eps_data_dependent, "<= 12",
             ln1000.privacy.eps_data_dependent <= 12),
        _row("LNMax 1000 queries label accuracy", "-", ln1000.label_accuracy, "record", True),
        _row("teacher training wall time (s)", "-", meta.get("wall_seconds", float("nan")), "record", True),
        _row("teacher training CPU time (s)", "-", meta.get("cpu_seconds", float("nan")), "record", True),
    ]
    return rows


def targets() -> list:
    """The :class:`gibbon.reproductions._common.Target` s of this module."""
    from gibbon.reproductions._common import Target

    return [Target("papernot2018-pate", "Papernot et al. 2018",
                   "PATE on MNIST: Confident-GNMax 286 answers, eps 1.97; LNMax 100 queries eps 2.04",
                   papernot2018_pate)]


__all__ = ["mnist_votes", "papernot2018_pate", "targets", "TEACHERS", "GAMMA", "THRESHOLD", "SIGMA1", "SIGMA2"]

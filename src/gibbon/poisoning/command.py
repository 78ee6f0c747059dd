"""``gibbon poison ...``: backdoors, label flipping and clean-label attacks, measured and saved.

Also :func:`parse_poison`, the ``gibbon train --poison SPEC`` option. Results are JSON (one file per
finished run, so a killed curve resumes) plus PNG figures in ``--out-dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gibbon.core.checks import GibbonInputError, check_seed_and_batch, parse_number_list, resolve_device

poison_app = typer.Typer(no_args_is_help=True, help="Training-set poisoning: backdoors (BadNets, blend), label "
                         "flipping, clean-label attacks and influence functions; detection.")
console, out = Console(stderr=True), Console()

TriggerOpt = typer.Option("patch", "--trigger", help="patch or blend, with options, e.g. patch:size=4,"
                          "pattern=checkerboard,location=bottom-right or blend:alpha=0.2 (pattern: checkerboard, "
                          "solid, noise).")
ArchOpt = typer.Option("lenet5", "--arch", help="Architecture trained on the poisoned data (see `gibbon zoo`).")
EpochsOpt = typer.Option(10, "--epochs", help="Training epochs (Adam, batch 128).")
LrOpt = typer.Option(1e-3, "--lr", help="Adam learning rate.")
NTrainOpt = typer.Option(None, "--n-train", help="Train on the first N training images only.")
DatasetOpt = typer.Option("mnist", "--dataset", help="digits, mnist, cifar10, synthetic or npz:PATH.")
SeedOpt = typer.Option(0, "--seed", help="Seed for poison choice, initialisation and training order.")
DeviceOpt = typer.Option(None, "--device", help="cuda, cpu ... (default: cuda if available, else cpu).")


def parse_rates(text: str, what: str = "--rate") -> list[float]:
    return parse_number_list(text, what, fractions=True)


def _load(dataset: str, n_train: Optional[int]):
    from gibbon import data

    if n_train is not None and n_train < 1:
        raise GibbonInputError(f"--n-train must be >= 1, got {n_train}")
    return data.load(dataset, "train", n=n_train), data.load(dataset, "val"), data.load(dataset, "test")


@poison_app.command("badnets")
def badnets(
    dataset: str = DatasetOpt,
    arch: str = ArchOpt,
    epochs: int = EpochsOpt,
    lr: float = LrOpt,
    n_train: Optional[int] = NTrainOpt,
    rate: str = typer.Option("0.01", "--rate", help="Poisoned fraction of the training set; a comma list "
                             "(0.001,0.01,0.1) draws the attack-success-rate curve."),
    target: int = typer.Option(0, "--target", help="The backdoor's target class."),
    trigger: str = TriggerOpt,
    detect: str = typer.Option("", "--detect", help="With one rate: run detectors on the poisoned training set, "
                               "comma list of spectral, activation-clustering, fine-pruning."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also train on the clean data (same seed) "
                                  "to compare clean accuracy."),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="With one rate: write the backdoored model "
                                              "to PATH.safetensors (+ card with the poisoning and its ASR)."),
    out_dir: Path = typer.Option(Path("results/poison/badnets"), "--out-dir",
                                 help="Where badnets.json and the PNGs go."),
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """BadNets (Gu et al. 2017) / blended (Chen et al. 2017) backdoor: clean accuracy and attack success rate."""
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.poisoning.experiments import DETECTORS, backdoor_run, detect as run_detectors, recipe
    from gibbon.poisoning.plots import save_curve, save_prediction_rows
    from gibbon.poisoning.triggers import apply_trigger, check_trigger, parse_trigger

    check_seed_and_batch(seed, 1)
    rates, spec = parse_rates(rate), parse_trigger(trigger)
    methods = [m.strip() for m in detect.split(",") if m.strip()]
    if (methods or save_model) and len(rates) > 1:
        raise GibbonInputError("--detect and --save-model need a single --rate")
    if unknown := [m for m in methods if m not in DETECTORS]:
        raise GibbonInputError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
    if save_model is not None and save_model.suffix != ".safetensors":
        raise GibbonInputError(f"--save-model must end in .safetensors, got {save_model}")
    device = resolve_device(device)
    train, val, test = _load(dataset, n_train)
    check_trigger(spec, train.input_shape)
    how = recipe(arch, epochs=epochs, lr=lr, seed=seed)
    runs = {}
    if baseline:
        runs["clean"] = backdoor_run(train, test, how, trigger=spec, target=target, rate=0, out_dir=out_dir,
                                     device=device, progress=True)
    keep = bool(methods or save_model)
    for r in rates:
        runs[str(r)] = backdoor_run(train, test, how, trigger=spec, target=target, rate=r, poison_seed=seed,
                                    out_dir=out_dir, device=device, progress=True, keep_model=keep)
        console.print(f"rate {r:g}: {runs[str(r)]['poisons']} poisons, clean accuracy "
                      f"{runs[str(r)]['clean_accuracy']:.2%}, attack success {runs[str(r)]['attack_success_rate']:.2%}",
                      highlight=False)
    report = {"dataset": dataset, "recipe": how, "target": target, "trigger": spec.to_dict(), "runs": {}}
    last = runs[str(rates[-1])]
    if keep:
        model, poisoned = last.pop("model"), last.pop("poisoned")
        if methods:
            report["detection"] = run_detectors(methods, model, poisoned, clean=val, test=test, trigger=spec,
                                                target=target, seed=seed)
        if save_model is not None:
            from gibbon import zoo

            card = {"architecture": arch, "dataset": dataset, "seed": seed, **how,
                    "clean_test_accuracy": last["clean_accuracy"],
                    "poisoning": {**poisoned.meta, "attack_success_rate": last["attack_success_rate"]}}
            zoo.save(model, save_model, card, dataset=train)
            out.print(f"saved {save_model}", highlight=False)
        sample = test.x[test.y != target][:8]
        stamped = apply_trigger(sample, spec, test.bounds)
        save_prediction_rows(out_dir / "badnets.png", model, {"clean": sample, "triggered": stamped})
    report["runs"] = runs
    write_json_atomic(out_dir / "badnets.json", report)
    if len(rates) > 1:
        save_curve(out_dir / "badnets-curve.png", rates,
                   {"attack success rate": [runs[str(r)]["attack_success_rate"] for r in rates],
                    "clean accuracy": [runs[str(r)]["clean_accuracy"] for r in rates]},
                   xlabel="poisoned fraction of the training set", ylabel="fraction", title="BadNets", logx=True)
    if baseline:
        out.print(f"clean model: accuracy {runs['clean']['clean_accuracy']:.2%}, attack success "
                  f"{runs['clean']['attack_success_rate']:.2%}", highlight=False)
    for method, found in report.get("detection", {}).items():
        if "metrics" in found:
            m = found["metrics"]
            out.print(f"{method}: {m['recall']:.1%} of the poisons flagged, {m['clean_removed']:.2%} of the clean "
                      f"rows", highlight=False)
        else:
            f = found["fine_tuned"]
            out.print(f"{method}: {len(found['pruned'])}/{found['channels']} channels pruned; after fine-tuning "
                      f"accuracy {f['clean_accuracy']:.2%}, attack success {f['attack_success_rate']:.2%}",
                      highlight=False)
    out.print(f"written to {out_dir / 'badnets.json'}", soft_wrap=True)


@poison_app.command("flip")
def flip(
    dataset: str = DatasetOpt,
    arch: str = ArchOpt,
    epochs: int = EpochsOpt,
    lr: float = LrOpt,
    n_train: Optional[int] = NTrainOpt,
    rate: str = typer.Option("0.1,0.2,0.4", "--rate", help="Flipped fractions (random: of all labels; targeted: "
                             "of the source class's), a comma list."),
    mode: str = typer.Option("random", "--mode", help="random or targeted."),
    source: Optional[int] = typer.Option(None, "--source", help="targeted: the class whose labels flip."),
    target: Optional[int] = typer.Option(None, "--target", help="targeted: the label they flip to."),
    out_dir: Path = typer.Option(Path("results/poison/flip"), "--out-dir", help="Where flip.json and flip.png go."),
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """Label flipping: test accuracy (and the source class's, targeted) against the flip rate."""
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.poisoning.experiments import flip_run, recipe
    from gibbon.poisoning.label_flip import MODES
    from gibbon.poisoning.plots import save_curve

    check_seed_and_batch(seed, 1)
    rates = parse_rates(rate)
    if mode not in MODES:
        raise GibbonInputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "random" and (source is not None or target is not None):
        raise GibbonInputError("--source/--target apply to --mode targeted only")
    if mode == "targeted" and (source is None or target is None):
        raise GibbonInputError("--mode targeted needs --source and --target, e.g. --source 7 --target 1")
    device = resolve_device(device)
    train, _, test = _load(dataset, n_train)
    how = recipe(arch, epochs=epochs, lr=lr, seed=seed)
    runs = {}
    for r in [0.0] + rates:
        runs[str(r)] = flip_run(train, test, how, rate=r, mode=mode, source=source, target=target, flip_seed=seed,
                                out_dir=out_dir, device=device, progress=True)
        shown = f", class {source}: {runs[str(r)]['source_accuracy']:.2%}" if source is not None else ""
        out.print(f"flip rate {r:g}: accuracy {runs[str(r)]['accuracy']:.2%}{shown}", highlight=False)
    write_json_atomic(out_dir / "flip.json", {"dataset": dataset, "recipe": how, "mode": mode, "source": source,
                                              "target": target, "runs": runs})
    xs = [0.0] + rates
    series = {"test accuracy": [runs[str(r)]["accuracy"] for r in xs]}
    if source is not None:
        series[f"class {source} accuracy"] = [runs[str(r)]["source_accuracy"] for r in xs]
    save_curve(out_dir / "flip.png", xs, series, xlabel="flip rate", ylabel="accuracy",
               title=f"label flipping ({mode})")
    out.print(f"written to {out_dir / 'flip.json'} and {out_dir / 'flip.png'}", soft_wrap=True)


def parse_poison(spec: str):
    """``gibbon train --poison``: ``badnets:rate=0.01,target=0[,size=4,pattern=...,trigger=blend,alpha=0.2]`` or
    ``flip:rate=0.2[,mode=targeted,source=7,target=1]`` -> ``(poison(train, seed) -> PoisonedSet, trigger or None)``."""
    from gibbon.poisoning.backdoor import badnets_poison
    from gibbon.poisoning.label_flip import flip_labels
    from gibbon.poisoning.triggers import parse_trigger

    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise GibbonInputError(f"--poison option {item!r} must be KEY=VALUE, e.g. rate=0.01")
        options[key.strip()] = value.strip()
    if "rate" not in options:
        raise GibbonInputError(f"--poison {name} needs rate=FRACTION, e.g. {name}:rate=0.01")
    rate = parse_rates(options.pop("rate"), "--poison rate")[0]
    if name == "badnets":
        target = _int_option(options.pop("target", "0"), "target")
        kind = options.pop("trigger", "patch")
        trigger = parse_trigger(kind + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else ""))
        return (lambda train, seed: badnets_poison(train, trigger, target, rate, seed=seed)), (trigger, target)
    if name == "flip":
        mode = options.pop("mode", "random")
        source = _int_option(options.pop("source"), "source") if "source" in options else None
        target = _int_option(options.pop("target"), "target") if "target" in options else None
        if options:
            raise GibbonInputError(f"unknown --poison flip option(s) {', '.join(options)}; use rate, mode, source, "
                                   "target")
        return (lambda train, seed: flip_labels(train, rate, mode=mode, source=source, target=target, seed=seed)), None
    raise GibbonInputError(f"unknown --poison attack {name!r}; use badnets:rate=...,target=... or flip:rate=...")


def _int_option(value: str, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise GibbonInputError(f"--poison option {key} must be a whole number, got {value!r}") from None


def _classes(text: Optional[str]):
    if text is None:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise GibbonInputError(f"--classes must be class indices separated by commas, e.g. 3,8; got {text!r}") from None


def _per_class(train, per_class: Optional[int], seed: int):
    """The first ``per_class`` images of each class after a seeded shuffle (Shafahi et al.: 900 each)."""
    import dataclasses

    import torch

    if per_class is None:
        return train
    if per_class < 1:
        raise GibbonInputError(f"--per-class must be >= 1, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    rows = torch.cat([(train.y == c).nonzero().flatten()[torch.randperm(int((train.y == c).sum()), generator=g)]
                      [:per_class] for c in range(train.num_classes)]).sort().values
    return dataclasses.replace(train, x=train.x[rows], y=train.y[rows], meta={})


def _model(path: Path, device: str, trust_code: bool):
    from gibbon import zoo

    return zoo.load(path, device=device, trust_code=trust_code).eval()


@poison_app.command("collision")
def collision(
    extractor: Path = typer.Option(..., "--extractor", help="The frozen feature extractor, PATH.safetensors (its "
                                   "last linear layer's input are the features)."),
    dataset: str = DatasetOpt,
    classes: Optional[str] = typer.Option("3,8", "--classes", help="The transfer task's classes (relabelled 0..k-1)."),
    per_class: Optional[int] = typer.Option(900, "--per-class", help="Training images per class for the head."),
    base_class: int = typer.Option(1, "--base-class", help="Poisons look like this class (index after --classes)."),
    target_class: int = typer.Option(0, "--target-class", help="Targets are test images of this class."),
    n_targets: int = typer.Option(50, "--n-targets", help="Targets, one poison and one retrained head each."),
    beta0: float = typer.Option(0.25, "--beta0", help="Proximity weight (beta = beta0 * D_feat^2 / D_input^2)."),
    steps: int = typer.Option(1000, "--steps", help="Forward-backward splitting steps."),
    lr: float = typer.Option(0.05, "--lr", help="Step size."),
    opacity: float = typer.Option(0.0, "--opacity", help="Watermark the target into the base at this opacity first."),
    out_dir: Path = typer.Option(Path("results/poison/collision"), "--out-dir", help="Where collision.json/png go."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let the model card's factory run."),
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """Feature-collision clean-label poisons (Shafahi et al. 2018): one-shot success over many targets."""
    from gibbon import data
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.poisoning.feature_collision import feature_collision, feature_collision_experiment
    from gibbon.poisoning.plots import save_image_rows

    check_seed_and_batch(seed, 1)
    device = resolve_device(device)
    model = _model(extractor, device, trust_code)
    train = _per_class(data.load(dataset, "train", classes=_classes(classes)), per_class, seed)
    test = data.load(dataset, "test", classes=_classes(classes))
    kw = dict(base_class=base_class, target_class=target_class, n_targets=n_targets, beta0=beta0, steps=steps, lr=lr,
              opacity=opacity, seed=seed)
    attack = feature_collision_experiment(model, train, test, **kw)
    control = feature_collision_experiment(model, train, test, noop=True, **kw)
    write_json_atomic(out_dir / "collision.json", {"attack": attack.to_dict(), "control": control.to_dict()})
    targets = test.x[attack.target_indices[:6]]
    bases = test.x[(test.y == base_class).nonzero().flatten()[:len(targets)]]
    poisons = feature_collision(model, bases, targets, beta0=beta0, steps=steps, lr=lr, bounds=test.bounds,
                                opacity=opacity)
    save_image_rows(out_dir / "collision.png", {"base": bases, "poison": poisons, "target": targets})
    out.print(f"feature collision: {attack.success_rate:.0%} of {len(attack.successes)} targets (control "
              f"{control.success_rate:.0%}); poison - base mean L2 {attack.l2:.2f}, L-inf {attack.linf:.2f}",
              highlight=False)
    out.print(f"written to {out_dir / 'collision.json'} and {out_dir / 'collision.png'}", soft_wrap=True)


@poison_app.command("brew")
def brew(
    model_path: Path = typer.Option(..., "--model", help="The crafting model, trained on the clean --n-train images."),
    arch: str = typer.Option(..., "--arch", help="The victims' architecture, trained from scratch."),
    dataset: str = DatasetOpt,
    n_train: Optional[int] = NTrainOpt,
    epochs: int = EpochsOpt,
    n_targets: int = typer.Option(10, "--n-targets", help="Targets, each with its own poisons and victim."),
    budget: float = typer.Option(0.01, "--budget", help="Poisoned fraction of the training set."),
    eps: float = typer.Option(16 / 255, "--eps", help="L-inf radius of the poison perturbations."),
    steps: int = typer.Option(250, "--steps", help="Signed-Adam steps."),
    restarts: int = typer.Option(1, "--restarts", help="Restarts (the lowest alignment loss is kept)."),
    out_dir: Path = typer.Option(Path("results/poison/brew"), "--out-dir", help="Where brew.json goes."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let the model card's factory run."),
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """Gradient-matching clean-label poisons (Geiping et al. 2021) against victims trained from scratch."""
    from gibbon import data
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.poisoning.gradient_matching import gradient_matching_experiment

    check_seed_and_batch(seed, 1)
    if eps < 0:
        raise GibbonInputError(f"--eps must be >= 0, got {eps}")
    device = resolve_device(device)
    model = _model(model_path, device, trust_code)
    train = data.load(dataset, "train", n=n_train)
    test = data.load_at_most(dataset, "test", 1000)  # targets: among the first 1,000
    attack, noise = gradient_matching_experiment(model, train, test, arch=arch, victim_epochs=epochs,
                                                 n_targets=n_targets, budget=budget, eps=eps, steps=steps,
                                                 restarts=restarts, seed=seed)
    write_json_atomic(out_dir / "brew.json", {"attack": attack.to_dict(), "noise": noise.to_dict()})
    out.print(f"gradient matching: {attack.success_rate:.0%} of {len(attack.successes)} targets (random noise "
              f"{noise.success_rate:.0%})", highlight=False)
    out.print(f"written to {out_dir / 'brew.json'}", soft_wrap=True)


@poison_app.command("influence")
def influence(
    model_path: Path = typer.Option(..., "--model", help="The trained model, PATH.safetensors."),
    dataset: str = DatasetOpt,
    classes: Optional[str] = typer.Option(None, "--classes", help="Keep these classes (e.g. 1,7 for a logistic "
                                          "regression)."),
    n_train: Optional[int] = NTrainOpt,
    test_index: int = typer.Option(0, "--test-index", help="The test image whose loss is explained."),
    k: int = typer.Option(8, "--k", help="Most helpful and most harmful training images to report."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="The L2 term of the training objective."),
    method: str = typer.Option("exact", "--method", help="exact (Hessian) or lissa."),
    params: str = typer.Option("all", "--params", help="all or last (the output layer only)."),
    damping: float = typer.Option(0.0, "--damping", help="Added to the Hessian's diagonal."),
    refit: bool = typer.Option(False, "--refit", help="First train the model to the optimum of the regularised "
                               "objective (full-batch L-BFGS), where influence functions are exact to first order."),
    loo: int = typer.Option(0, "--loo", help="Also retrain without each of the top N points by |influence| "
                            "(L-BFGS, warm start) and report the correlation with the prediction (implies --refit)."),
    out_dir: Path = typer.Option(Path("results/poison/influence"), "--out-dir", help="Where influence.json/png go."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let the model card's factory run."),
    seed: int = SeedOpt,
):
    """Influence functions (Koh & Liang 2017): the training images that most help and hurt one test prediction."""
    from gibbon import data
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.poisoning import influence as inf
    from gibbon.poisoning.plots import save_image_rows

    check_seed_and_batch(seed, 1)
    model = _model(model_path, "cpu", trust_code)
    train = data.load(dataset, "train", n=n_train, classes=_classes(classes))
    test = data.load(dataset, "test", classes=_classes(classes))
    if not 0 <= test_index < len(test.y):
        raise GibbonInputError(f"--test-index must be in [0, {len(test.y)}), got {test_index}")
    if k < 1:
        raise GibbonInputError(f"--k must be >= 1, got {k}")
    tx, ty = test.x[test_index:test_index + 1], test.y[test_index:test_index + 1]
    if refit or loo:
        # an SGD/Adam run stops short of the regularised optimum; influence is a statement about that optimum
        model = inf.lbfgs_fit(model, train.x, train.y, weight_decay=weight_decay, params=params, max_iter=1000)
    scores = inf.influence_scores(model, train.x, train.y, tx, ty, weight_decay=weight_decay, method=method,
                                  params=params, damping=damping, seed=seed)
    helpful, harmful = inf.most_influential(scores, k)
    report = {"test_index": test_index, "label": int(ty), "weight_decay": weight_decay, "method": method,
              "params": params, "helpful": [{"index": int(i), "label": int(train.y[i]), "influence": float(scores[i])}
                                            for i in helpful],
              "harmful": [{"index": int(i), "label": int(train.y[i]), "influence": float(scores[i])} for i in harmful]}
    if loo:
        n = len(train.y)
        idx = inf.top_by_magnitude(scores, loo)
        retrain = lambda x, y, init: inf.lbfgs_fit(init, x, y, weight_decay=weight_decay, n_total=n,  # noqa: E731
                                                   params=params, max_iter=300, rounds=3)
        result = inf.leave_one_out_check(retrain, model, train.x, train.y, tx, ty, idx,
                                         inf.predicted_loo_change(scores, n))
        report["leave_one_out"] = result.to_dict()
        out.print(f"leave-one-out over {loo} points: Pearson {result.pearson:.4f}, Spearman {result.spearman:.4f}",
                  highlight=False)
    write_json_atomic(out_dir / "influence.json", report)
    save_image_rows(out_dir / "influence.png", {"test": tx.expand(len(helpful), *tx.shape[1:]),
                                                "helpful": train.x[helpful], "harmful": train.x[harmful]},
                    labels={"test": [f"label {int(ty)}"] * len(helpful),
                            "helpful": [f"y {int(train.y[i])}" for i in helpful],
                            "harmful": [f"y {int(train.y[i])}" for i in harmful]})
    out.print(f"most harmful training images: {', '.join(str(int(i)) for i in harmful)}; most helpful: "
              f"{', '.join(str(int(i)) for i in helpful)}", highlight=False)
    out.print(f"written to {out_dir / 'influence.json'} and {out_dir / 'influence.png'}", soft_wrap=True)

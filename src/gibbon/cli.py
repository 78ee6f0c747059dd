"""The ``gibbon`` command: train, evaluate, attack, zoo, reproduce.

Bad arguments end with a one-line ``error: ...`` that says what to do, and exit code 2.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from gibbon.core.checks import GibbonInputError, check_seed_and_batch, resolve_device
from gibbon.evaluation.inputs import check_model_fits, check_oracle_fits
from gibbon.oracles.loading import load_black_box as _load_any
from gibbon.oracles.loading import load_oracle

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="gibbon: attack, defend and evaluate machine learning models.")
console = Console(stderr=True)
out = Console()

# The main job (`gibbon evaluate` with no model): Madry et al.'s MNIST CNN, trained once and cached.
# Its settings are shared with gibbon reproduce (madry2018-natural), so they live below both.
from gibbon.reproductions._common import (MAIN_ARCH, MAIN_ATTACKS, MAIN_DATASET, MAIN_EPOCHS,  # noqa: E402
                                          MAIN_EPS, MAIN_N)

SeedOpt = typer.Option(0, "--seed", help="Seed for every random choice (training order, random starts).")
BatchOpt = typer.Option(250, "--batch-size", help="Mini-batch size for attacks and evaluation.")
DeviceOpt = typer.Option(None, "--device", help="cuda, cuda:1, cpu ... (default: cuda if available, else cpu).")
RemediesOpt = typer.Option("auto", "--remedies", help="Remedies the adaptive evaluation may apply: auto (each where a "
                           "check calls for it), none, or a comma list of bpda, eot, margin, log-probabilities, "
                           "gradient-free, surrogate.")
AdaptiveSuiteOpt = typer.Option("reliable", "--suite", help="Suite folded into the adaptive worst case, run as "
                                "`evaluate --suite` runs it (deterministic models): reliable, quick or none.")
DatasetOpt = typer.Option("mnist", "--dataset", help="digits, mnist, cifar10, synthetic or npz:PATH.")
SplitOpt = typer.Option("test", "--split", help="train, val or test.")
ModelOpt = typer.Option(..., "--model", help="PATH.safetensors, pkg.module:factory with --weights, onnx:PATH.onnx "
                       "(converted to torch, white-box), torchvision:NAME[:num_classes=N,...] or timm:NAME[:...].")
WeightsOpt = typer.Option(None, "--weights", help="Weights (a PATH.safetensors state dict) for a pkg.module:factory, "
                          "torchvision: or timm: model (these two start from a random init without it).")
NormalizeOpt = typer.Option(None, "--normalize", help="Put (x - mean) / std inside the model so attacks work in "
                            "[0, 1] pixels: MEAN:STD with comma lists per channel (0.485,0.456,0.406:0.229,0.224,"
                            "0.225) or imagenet / cifar10.")
TrustCodeOpt = typer.Option(False, "--trust-code", help="Let a model card that names a factory (pkg.module:function) "
                            "import and run it. Only for cards you wrote or trust: the card picks the code.")


def load_model(spec: str, weights: Optional[str], device: str, trust_code: bool = False,
               normalize: Optional[str] = None):
    """A saved gibbon model (PATH.safetensors), a user's ``pkg.module:factory`` with --weights, or a
    model from outside gibbon: ``onnx:PATH.onnx``, ``torchvision:NAME[:...]``, ``timm:NAME[:...]``
    (:func:`gibbon.zoo.foreign.load_foreign`). ``normalize`` (--normalize MEAN:STD) wraps any of them
    in ``(x - mean) / std``. ``trust_code`` (--trust-code) lets a card's own factory run; the command
    line's spec always may."""
    from gibbon import zoo
    from gibbon.zoo import foreign

    if normalize is not None:
        foreign.parse_normalization(normalize)  # fail fast, before a model is built
    if foreign.is_foreign_spec(spec) and not Path(spec).exists():  # before the module-path test: onnx:x.onnx is no module
        model = foreign.load_foreign(spec, weights=weights)
    elif spec.endswith(".onnx"):
        raise GibbonInputError(f"give an ONNX model as --model onnx:{spec} (white-box, converted to torch) or "
                               f"--oracle onnx:{spec} (black-box, onnxruntime)")
    elif ":" in spec and not Path(spec).exists() and not spec.endswith(".safetensors"):
        if weights is None:
            raise GibbonInputError("a model given as pkg.module:factory needs --weights F.safetensors")
        model = zoo.load_user_model(spec, weights=weights)
    else:
        model = zoo.load(spec, device=device, trust_code=trust_code)
    if normalize is not None:
        model = foreign.normalize(model, normalize)
    return model.to(device)


def main_job_model(seed: int, device: str):
    from gibbon import zoo

    console.print(f"[bold]main job[/]: {MAIN_ARCH} on {MAIN_DATASET} ({MAIN_EPOCHS} epochs, trained once and cached)")
    path = zoo.trained(MAIN_ARCH, MAIN_DATASET, epochs=MAIN_EPOCHS, seed=seed)
    console.print(f"model: {path}", soft_wrap=True)
    return zoo.load(path, device=device)


def parse_params(items: List[str]) -> dict:
    """``["C=10", "kernel=rbf"]`` -> ``{"C": 10, "kernel": "rbf"}`` (ints, floats, true/false, none)."""
    params = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise GibbonInputError(f"--param takes KEY=VALUE (e.g. --param C=10), got {item!r}")
        value = value.strip()
        lowered = value.lower()
        if lowered in ("true", "false"):
            params[key] = lowered == "true"
        elif lowered == "none":
            params[key] = None
        else:
            for kind in (int, float):
                try:
                    params[key] = kind(value)
                    break
                except ValueError:
                    continue
            else:
                params[key] = value
    return params


def train_technique_cli(technique: str, dataset: str, out_path: Path, n_train: Optional[int], seed: int,
                        params: dict) -> None:
    """``gibbon train --technique``: a scikit-learn technique, saved with skops + a JSON card."""
    from gibbon import data as gdata
    from gibbon.oracles.sklearn import TECHNIQUES, save_sklearn, train_technique

    if technique not in TECHNIQUES:
        raise GibbonInputError(f"unknown technique {technique!r}; choose one of {', '.join(TECHNIQUES)}")
    if out_path.suffix != ".skops":
        raise GibbonInputError(f"--out must end in .skops for a --technique model, got {out_path}")
    train_set = gdata.load(dataset, "train")
    model = train_technique(technique, train_set, seed=seed, n_train=n_train, test=gdata.load(dataset, "test"),
                            **params)
    save_sklearn(model, out_path)
    card = model.card
    out.print(f"saved {out_path} ({technique} on {card['n_train']} {dataset} images, "
              f"test accuracy {card['clean_test_accuracy']:.2%})")


@app.command()
def train(
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture name (see `gibbon zoo`)."),
    technique: Optional[str] = typer.Option(
        None, "--technique", help="Or a scikit-learn technique: lr, svm-linear, svm-rbf, tree, forest, boosting, knn."),
    dataset: str = DatasetOpt,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (--arch; default 2)."),
    out_path: Path = typer.Option(..., "--out", help="Where to write PATH.safetensors (--arch) or PATH.skops "
                                                     "(--technique), + PATH.json card."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (--arch; default 0.001)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam, sgd (momentum 0.9) or sgd-nesterov (--arch; default adam)."),
    n_train: Optional[int] = typer.Option(
        None, "--n", "--n-train", help="Train on N training images only (--arch: the first N; --technique: a "
                                       "random N drawn with --seed; svm-rbf and knn default to 10000)."),
    param: List[str] = typer.Option([], "--param", help="KEY=VALUE estimator parameter (--technique); repeat."),
    defense: Optional[str] = typer.Option(
        None, "--defense", help="Train with a defense (--arch): fgsm, pgd, fast, trades, ensemble, vat, distill, noise, dp, "
                                "with options as NAME:key=value,... e.g. pgd:eps=0.3,steps=40 (see `gibbon defenses`)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Learning-rate schedule (--arch): constant, cyclic "
                                                                    "(Wong et al.'s, for --defense fast) or step."),
    poison: Optional[str] = typer.Option(
        None, "--poison", help="Poison the training set first (--arch): badnets:rate=0.01,target=0[,size=4,"
                               "trigger=blend,alpha=0.2] or flip:rate=0.2[,mode=targeted,source=7,target=1]; the card "
                               "records it (and the backdoor's attack success rate)."),
    seed: int = SeedOpt,
    batch_size: int = typer.Option(128, "--batch-size", help="Training mini-batch size."),
    device: Optional[str] = DeviceOpt,
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast, CPU or CUDA) or fp16 (CUDA, "
                                  "with loss scaling) for --arch training, inner attack included."),
):
    """Train a zoo architecture (checkpoints every epoch, resumes after a kill), optionally with a defense, or a
    scikit-learn technique. Under `torchrun --nproc_per_node N -m gibbon.cli train ...` an --arch trains data
    parallel (gloo on CPU, nccl on CUDA) with the same global --batch-size."""

    check_seed_and_batch(seed, batch_size)
    if arch is not None and technique is not None:
        raise GibbonInputError("--arch and --technique are mutually exclusive; pass one of them")
    if arch is None and technique is None:
        raise GibbonInputError("pass --arch NAME (see `gibbon zoo`) or --technique NAME (lr, svm-rbf, forest, ...)")
    if n_train is not None and n_train < 1:
        raise GibbonInputError(f"--n-train must be >= 1, got {n_train}")
    if technique is not None:
        unused = [name for name, value in (("--epochs", epochs), ("--lr", lr), ("--defense", defense),
                                           ("--schedule", schedule), ("--optimizer", optimizer), ("--poison", poison))
                  if value is not None]
        if unused:
            raise GibbonInputError(f"{' and '.join(unused)} {'apply' if len(unused) > 1 else 'applies'} to --arch only; "
                                   "a --technique takes --param KEY=VALUE")
        train_technique_cli(technique, dataset, out_path, n_train, seed, parse_params(param))
        return
    if param:
        raise GibbonInputError("--param applies to --technique only; an --arch takes --epochs, --lr, --batch-size")
    epochs = 2 if epochs is None else epochs
    lr = 1e-3 if lr is None else lr
    optimizer = "adam" if optimizer is None else optimizer
    if epochs < 1:
        raise GibbonInputError(f"--epochs must be >= 1, got {epochs}")
    from gibbon.zoo.training import OPTIMIZERS

    if optimizer not in OPTIMIZERS:
        raise GibbonInputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if out_path.suffix != ".safetensors":
        raise GibbonInputError(f"--out must end in .safetensors, got {out_path}")
    defense_config = None
    if defense is not None:
        from gibbon.defenses import parse_defense

        defense_config = parse_defense(defense)
    poisoning = None
    if poison is not None:
        from gibbon.poisoning.command import parse_poison

        poisoning = parse_poison(poison)
    from gibbon.zoo import distributed
    from gibbon.zoo.precision import check_precision

    device = resolve_device(device)
    check_precision(precision, device)
    if defense_config is not None and defense_config.name == "dp" and (precision != "fp32"
                                                                       or distributed.launched_by_torchrun()):
        raise GibbonInputError("--defense dp trains with Opacus in one process and float32: drop --precision and "
                               "torchrun for it")
    device = distributed.init_from_env(device)
    try:
        _train_arch(arch, dataset, epochs, out_path, lr, optimizer, n_train, defense_config, schedule, poisoning,
                    seed, batch_size, device, precision)
    finally:
        distributed.shutdown()


def _train_arch(arch, dataset, epochs, out_path, lr, optimizer, n_train, defense_config, schedule, poisoning, seed,
                batch_size, device, precision="fp32"):
    import torch

    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.zoo import distributed

    main = distributed.is_main()
    train_set = gdata.load(dataset, "train", n=n_train)
    val_set, test_set = gdata.load(dataset, "val"), gdata.load(dataset, "test")
    if poisoning is not None:
        poisoned = poisoning[0](train_set, seed)
        train_set = poisoned.dataset
        main and console.print(f"poisoned {len(poisoned.poison_indices)} of {len(train_set)} training images "
                      f"({poisoned.meta['attack']})", highlight=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = zoo.build(arch, train_set).to(device)
    ckpt = out_path.with_name(out_path.stem + ".ckpt")
    fit_kwargs = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                      val=val_set, seed=seed, checkpoint_dir=ckpt, device=device)
    if precision != "fp32":  # only then: defenses with their own loop (dp) take no precision
        fit_kwargs["precision"] = precision
    if defense_config is None:
        result = zoo.fit(model, train_set, **fit_kwargs)
    else:
        main and console.print(f"defense: {defense_config.spec()} ({defense_config.paper})", highlight=False)
        result = defense_config.fit(model, train_set, **fit_kwargs)
    if not main:  # rank 0 holds the same weights and writes the files
        return
    _, world = distributed.rank_and_world()
    acc = zoo.accuracy(model, test_set)
    card = {"architecture": arch, "dataset": dataset, "seed": seed, "epochs": epochs, "lr": lr, "optimizer": optimizer,
            "schedule": schedule,
            "batch_size": batch_size, "n_train": len(train_set), "clean_test_accuracy": acc, "history": result.history}
    if world > 1:
        card["processes"] = world
    if precision != "fp32":
        card["precision"] = precision
    if defense_config is not None:
        card.update(defense_config.trained_card(result))
    if poisoning is not None:
        card["poisoning"] = dict(poisoned.meta)
        if poisoning[1] is not None:
            from gibbon.poisoning.backdoor import attack_success_rate

            card["poisoning"]["attack_success_rate"] = attack_success_rate(model, test_set, *poisoning[1])
    zoo.save(model, out_path, card, dataset=train_set)
    shown = "" if defense_config is None else f", defense {defense_config.name}"
    if card.get("poisoning", {}).get("attack_success_rate") is not None:
        shown += f", backdoor success {card['poisoning']['attack_success_rate']:.2%}"
    if card.get("privacy"):
        shown += f", epsilon {card['privacy']['epsilon']:.2f} at delta {card['privacy']['delta']:g}"
    out.print(f"saved {out_path} (test accuracy {acc:.2%}{shown})")


@app.command()
def evaluate(
    model_spec: Optional[str] = typer.Option(None, "--model", help="PATH.safetensors, pkg.module:factory with --weights, onnx:PATH.onnx (white-box, via onnx2torch), torchvision:NAME[:num_classes=N] or timm:NAME[:...]. Omit for the main job."),
    weights: Optional[str] = WeightsOpt,
    oracle_spec: Optional[str] = typer.Option(None, "--oracle", help="A black-box target: sklearn:PATH.skops or onnx:PATH.onnx (black-box attacks only, or --gradient)."),
    gradient: Optional[str] = typer.Option(None, "--gradient", help="nes[:samples=N,sigma=S] or spsa[...]: gradient attacks see only scores, through estimated gradients."),
    max_total_queries: Optional[int] = typer.Option(None, "--max-total-queries", help="Queries the black box (--oracle or --gradient) may answer in all: shared fairly by the attacks and batches, which stop before it; the report warns where it cut an attack short."),
    dataset: str = DatasetOpt,
    split: str = SplitOpt,
    n: Optional[int] = typer.Option(None, "--n", help="Evaluate on the first N samples."),
    attack: List[str] = typer.Option([], "--attack", help="NAME[:key=value,...]; repeat for several."),
    eps: List[float] = typer.Option([], "--eps", help="Budget; repeat for several."),
    norm: str = typer.Option("linf", "--norm", help="linf, l2, l1 or l0."),
    target: Optional[str] = typer.Option(None, "--target", help="Targeted evaluation: CLASS, least-likely or random "
                                         "(per sample, seeded); a sample is robust unless the attack reaches its "
                                         "target. Default: untargeted."),
    cascade: bool = typer.Option(False, "--cascade", help="Attack only samples still robust (fast worst case)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="reliable (AutoAttack's ensemble) or quick; implies --cascade."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Resume file for long evaluations."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Adaptive evaluation (as `gibbon diagnose`): the masking "
                                  "checks, the remedies they call for (BPDA, EOT, margin loss, gradient-free, "
                                  "surrogate) and the per-sample worst case over all of them; one --eps, linf."),
    remedies: str = RemediesOpt,
    normalize: Optional[str] = NormalizeOpt,
    trust_code: bool = TrustCodeOpt,
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
    device: Optional[str] = DeviceOpt,
    ray: bool = typer.Option(False, "--ray", help="Fan the (attack, eps, shard) pieces out as Ray tasks (pip install "
                             "'gibbon[ray]'); a local Ray unless --address; shards saved beside --checkpoint. Same "
                             "numbers as one process."),
    address: Optional[str] = typer.Option(None, "--address", help="A running Ray cluster: auto or ray://HOST:PORT "
                                          "(implies --ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="CPUs of the local Ray (implies --ray)."),
    precision: str = typer.Option("fp32", "--precision", help="Attack the --model (or main job) under autocast: "
                                  "bf16 (CPU or CUDA) or fp16 (CUDA); scores come back float32."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model first (pays off on long "
                                       "runs; compiles for tens of seconds on a CPU)."),
):
    """Robust accuracy of a model under attacks at several budgets, with the per-sample worst case."""
    from gibbon import data as gdata
    from gibbon.attacks import parse_attack
    from gibbon.core.norms import get_norm
    from gibbon.evaluation import evaluate as run_evaluation
    from gibbon.evaluation.distributed import make_executor
    from gibbon.evaluation.inputs import require_black_box, resolve_attacks
    from gibbon.evaluation.suites import suite_attacks

    check_seed_and_batch(seed, batch_size)
    device = resolve_device(device)
    norm = get_norm(norm).name
    if adaptive and target is not None:
        raise GibbonInputError("--adaptive evaluates untargeted robustness; drop --target (or drop --adaptive)")
    if normalize is not None and model_spec is None:
        raise GibbonInputError("--normalize wraps the --model; drop it for an --oracle or the main job")
    if adaptive and (precision != "fp32" or compile_model):
        raise GibbonInputError("--adaptive attacks the model as it is; drop --precision/--compile")
    if adaptive and (ray or address is not None or workers is not None):
        raise GibbonInputError("--adaptive runs in one process; drop --ray/--address/--workers (or drop --adaptive)")
    if adaptive:
        return _evaluate_adaptive(model_spec, weights, oracle_spec, dataset, split, n, attack, eps, norm, suite,
                                  remedies, json_path, seed, batch_size, device, trust_code, normalize)
    configs = [parse_attack(spec) for spec in (suite_attacks(suite) if suite else []) + list(attack)]
    # fail fast on a norm the attack does not define, or a targeted-only attack without --target
    resolved = resolve_attacks(configs, norm, targeted=target is not None)
    if oracle_spec is not None and gradient is None:
        require_black_box(resolved)  # fail fast: a gradient attack on a black box
    if max_total_queries is not None and (oracle_spec is None and gradient is None or max_total_queries < 0):
        raise GibbonInputError("--max-total-queries takes a whole number >= 0 and limits a black box: pass it "
                               "with --oracle or --gradient")
    if oracle_spec is not None:
        if model_spec is not None:
            raise GibbonInputError("pass either --model or --oracle, not both")
        if not configs:
            raise GibbonInputError("pass at least one black-box --attack (e.g. --attack square) for an --oracle target")
    elif model_spec is None:
        configs = configs or [parse_attack(s) for s in MAIN_ATTACKS]
        eps = eps or MAIN_EPS
        n = MAIN_N if n is None else n
        if dataset != MAIN_DATASET:
            raise GibbonInputError(f"the main job runs on {MAIN_DATASET}; pass --model to evaluate another dataset")
        json_path = json_path or Path("results/main-job.json")
    if not configs:
        raise GibbonInputError("pass at least one --attack NAME (e.g. --attack pgd); list them with `gibbon attacks`")
    if not eps and not all(c.minimal for c in configs):
        raise GibbonInputError("pass at least one --eps (e.g. --eps 0.3)")
    data = gdata.load(dataset, split, n=n)
    if oracle_spec is not None:
        model = load_oracle(oracle_spec)
    else:
        model = main_job_model(seed, device) if model_spec is None else load_model(model_spec, weights, device,
                                                                                   trust_code, normalize)
    check_model_fits(model, data)
    if precision != "fp32" or compile_model:
        if oracle_spec is not None:
            raise GibbonInputError("--precision and --compile change how a --model computes; an --oracle answers "
                                   "as it is: drop them")
        from gibbon.zoo.precision import accelerate

        model = accelerate(model, precision=precision, compile=compile_model, device=device)
    if max_total_queries is not None or gradient is not None:
        from gibbon.oracles import Oracle, parse_gradient

        if max_total_queries is not None or not isinstance(model, Oracle):  # a view that counts from here on
            model = Oracle(model, max_total=max_total_queries)
        if gradient is not None:  # the attacks see the model through score queries only
            model = parse_gradient(gradient, model, bounds=data.bounds, seed=seed)
    executor = make_executor(ray, address, workers)
    with executor if executor is not None else contextlib.nullcontext():
        report = run_evaluation(model, data, configs, eps, norm=norm, cascade=cascade or suite is not None,
                                batch_size=batch_size, seed=seed, device=device, checkpoint=checkpoint, progress=True,
                                target=target, executor=executor)
    out.print(report.table())
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if json_path is not None:
        report.to_json(json_path)
        out.print(f"report written to {json_path}")


def _evaluate_adaptive(model_spec, weights, oracle_spec, dataset, split, n, attack, eps, norm, suite, remedies,
                       json_path, seed, batch_size, device, trust_code, normalize=None):
    from gibbon import data as gdata
    from gibbon.evaluation.remedies import parse_remedies

    parse_remedies(remedies)  # fail fast, before any model is loaded
    if attack:
        raise GibbonInputError("--adaptive chooses its own attacks; drop --attack (or drop --adaptive)")
    if len(eps) != 1 or norm != "linf":
        raise GibbonInputError("--adaptive takes exactly one --eps and the linf norm (e.g. --adaptive --eps 0.3)")
    if (model_spec is None) == (oracle_spec is None):
        raise GibbonInputError("--adaptive needs the model to evaluate: pass --model (or --oracle)")
    data = gdata.load(dataset, split)
    model = (load_oracle(oracle_spec) if oracle_spec is not None
             else load_model(model_spec, weights, device, trust_code, normalize).eval())
    check_model_fits(model, data)
    report = _run_diagnosis(model, data, eps=eps[0], n=len(data) if n is None else n, batch_size=batch_size,
                            seed=seed, device=device, square_queries=1000, transfer_from=None, substitute=False,
                            remedies=remedies, suite=suite or "reliable", json_path=json_path,
                            described={"model": model_spec or oracle_spec, "adaptive": True})
    low, high = report.adaptive_interval
    out.print(f"adaptive robust accuracy at linf eps {eps[0]:g}: {report.adaptive_robust_accuracy:.2%} "
              f"[{low:.1%}, {high:.1%}] ({report.verdict})", highlight=False)


@app.command()
def attack(
    model_spec: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    dataset: str = DatasetOpt,
    split: str = SplitOpt,
    attack_spec: str = typer.Option(..., "--attack", help="NAME[:key=value,...]"),
    eps: Optional[float] = typer.Option(None, "--eps", help="Budget (required by budget attacks)."),
    norm: str = typer.Option("linf", "--norm", help="linf, l2, l1 or l0."),
    target: Optional[str] = typer.Option(None, "--target", help="CLASS, least-likely or random (default: untargeted)."),
    n: int = typer.Option(100, "--n", help="Attack the first N samples."),
    out_path: Path = typer.Option(..., "--out", help="Write x, x_adv, y, pred_adv, success, distance to PATH.npz."),
    normalize: Optional[str] = NormalizeOpt,
    trust_code: bool = TrustCodeOpt,
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
    device: Optional[str] = DeviceOpt,
):
    """Craft adversarial examples and save them with their success and distance."""
    from gibbon import data as gdata
    from gibbon.attacks import parse_attack
    from gibbon.core.checks import check_eps
    from gibbon.core.norms import get_norm
    from gibbon.attacks.run import run_attack, save_npz
    from gibbon.evaluation.inputs import resolve_attacks

    check_seed_and_batch(seed, batch_size)
    device = resolve_device(device)
    cfg = parse_attack(attack_spec)
    norm_obj = get_norm(norm)
    resolve_attacks([cfg], norm_obj.name, targeted=target is not None)
    if eps is None and not cfg.minimal:
        raise GibbonInputError(f"attack {cfg.name} needs a budget: pass --eps (e.g. --eps 0.3)")
    if eps is not None:
        check_eps(eps, name="--eps")
    if out_path.suffix != ".npz":
        raise GibbonInputError(f"--out must end in .npz, got {out_path}")
    data = gdata.load(dataset, split, n=n)
    model = load_model(model_spec, weights, device, trust_code, normalize)
    check_model_fits(model, data)
    result = run_attack(model, data, cfg, eps=eps, norm=norm_obj.name, target=target, batch_size=batch_size, seed=seed,
                   device=device)
    save_npz(out_path, result)
    out.print(f"{cfg.name}: success {result.success.float().mean():.2%} on {len(data)} samples; "
              f"median {norm_obj.name} distance {result.distance[result.success].median() if result.success.any() else float('nan'):.4f}; "
              f"written to {out_path}")


@app.command()
def substitute(
    oracle_spec: str = typer.Option(..., "--oracle", help="The black box: sklearn:PATH.skops, onnx:PATH.onnx or a zoo PATH.safetensors (labels only)."),
    dataset: str = DatasetOpt,
    seed_images: int = typer.Option(150, "--seed-images", help="The adversary's seed set: the first N test images."),
    n: int = typer.Option(2000, "--n", help="Test images attacked (the ones after the seed set)."),
    rounds: int = typer.Option(6, "--rounds", help="Jacobian augmentations rho (the paper's substitute epochs): the last substitute is trained on 2^rho times the seed images."),
    step: float = typer.Option(0.1, "--step", help="Jacobian augmentation step lambda (sign flipped every 3 rounds)."),
    reservoir_from: Optional[int] = typer.Option(None, "--reservoir-from", help="Reservoir sampling from this round on (sigma)."),
    reservoir_size: int = typer.Option(400, "--reservoir-size", help="Points augmented per round with reservoir sampling (kappa)."),
    arch: str = typer.Option("mlp-200-200", "--arch", help="The substitute's architecture (see `gibbon zoo`)."),
    epochs: int = typer.Option(10, "--epochs", help="Substitute training epochs per round."),
    shift: int = typer.Option(0, "--shift", help="Train the substitute on copies shifted by up to N pixels (no queries; 2 transfers much better on MNIST; 0: the paper's algorithm)."),
    attack_spec: str = typer.Option("fgsm", "--attack", help="White-box attack crafted on the substitute, NAME[:key=value,...]."),
    eps: float = typer.Option(0.3, "--eps", help="The attack's budget."),
    norm: str = typer.Option("linf", "--norm", help="linf, l2, l1 or l0."),
    max_total_queries: Optional[int] = typer.Option(None, "--max-total-queries", help="Labels the attack may ask of the oracle in all, scoring included (an API's budget): the augmentation stops before it."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON here."),
    trust_code: bool = TrustCodeOpt,
    seed: int = SeedOpt,
):
    """Papernot et al.'s black-box attack: train a substitute from oracle labels, transfer an attack."""
    import json

    import torch

    from gibbon import data as gdata
    from gibbon import zoo as gzoo
    from gibbon.attacks import parse_attack
    from gibbon.core.norms import get_norm
    from gibbon.evaluation.inputs import resolve_attacks
    from gibbon.oracles import Oracle
    from gibbon.transfer import substitute_attack

    norm = get_norm(norm).name
    if seed_images < 1 or n < 1 or rounds < 0 or epochs < 1 or step <= 0 or shift < 0:
        raise GibbonInputError("--seed-images, --n and --epochs must be >= 1, --rounds and --shift >= 0 and --step > 0")
    attack_cfg = parse_attack(attack_spec)
    resolve_attacks([attack_cfg], norm, targeted=False)
    oracle = Oracle(_load_any(oracle_spec, trust_code), output="label", max_total=max_total_queries)
    test = gdata.load(dataset, "test", n=seed_images + n)
    if len(test) <= seed_images:
        raise GibbonInputError(f"{dataset} has {len(test)} test images: fewer than --seed-images + 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = gzoo.build(arch, test)
    result = substitute_attack(oracle, test.x[:seed_images], model, test.x[seed_images:], test.y[seed_images:],
                               attack_cfg, eps=eps, norm=norm, rounds=rounds, step=step, epochs=epochs,
                               reservoir_from=reservoir_from, reservoir_size=reservoir_size, shift=shift,
                               bounds=test.bounds, classes=test.classes, seed=seed, progress=True)
    summary = result.to_dict()
    for key in ("queries", "training_points", "substitute_accuracy", "agreement", "oracle_accuracy",
                "adversarial_accuracy", "transfer_success", "attack_queries", "stopped_by_budget"):
        value = summary[key]
        out.print(f"{key:<22s} {value:.4f}" if isinstance(value, float) else f"{key:<22s} {value}")
    if json_path is not None:
        from gibbon.zoo.io import write_json

        write_json(json_path, {"oracle": oracle_spec, "dataset": dataset, "arch": arch, "attack": attack_spec,
                               "eps": eps, "norm": norm, "seed_images": seed_images, "rounds": rounds,
                               "step": step, "shift": shift, **json.loads(json.dumps(summary, default=float))})
        out.print(f"result written to {json_path}")


@app.command()
def diagnose(
    model_spec: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    dataset: str = DatasetOpt,
    split: str = SplitOpt,
    eps: float = typer.Option(0.3, "--eps", help="The L-infinity budget the defense claims."),
    n: int = typer.Option(500, "--n", help="Samples attacked (the first N of the split)."),
    square_queries: int = typer.Option(1000, "--square-queries", help="Square's query budget per sample."),
    transfer_from: Optional[str] = typer.Option(None, "--transfer-from", help="A separately trained PATH.safetensors: "
                                                "PGD-100 crafted on it is sent to the model."),
    substitute_check: bool = typer.Option(False, "--substitute", help="Also run Papernot's substitute attack (minutes)."),
    transform: Optional[str] = typer.Option(None, "--transform", help="Put an input transformation in front of the "
                                            "model, NAME[:key=value,...] (see gibbon.defenses.transforms)."),
    remedies: str = RemediesOpt,
    suite: str = AdaptiveSuiteOpt,
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the diagnosis as JSON here."),
    trust_code: bool = TrustCodeOpt,
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
    device: Optional[str] = DeviceOpt,
):
    """Gradient-masking diagnostics: a checklist of findings, the remedies applied, the adaptive robust
    accuracy and a verdict (exit code 0 either way)."""
    from gibbon import data as gdata

    from gibbon.evaluation.remedies import parse_remedies

    check_seed_and_batch(seed, batch_size)
    parse_remedies(remedies)  # fail fast, before any model is loaded
    if n < 1 or square_queries < 1:
        raise GibbonInputError("--n and --square-queries must be >= 1")
    device = resolve_device(device)
    model = load_model(model_spec, weights, device, trust_code).eval()
    if transform is not None:
        from gibbon.defenses.front_ends import parse_transform

        model = parse_transform(transform, model)
    data = gdata.load(dataset, split)
    check_model_fits(model, data)
    source = None if transfer_from is None else load_model(transfer_from, None, device, trust_code).eval()
    _run_diagnosis(model, data, eps=eps, n=n, batch_size=batch_size, seed=seed, device=device,
                   square_queries=square_queries, transfer_from=source, substitute=substitute_check,
                   remedies=remedies, suite=suite, json_path=json_path,
                   described={"model": model_spec, "transform": transform})


def _run_diagnosis(model, data, *, json_path, described: dict, **kwargs):
    """diagnose + adaptive evaluation, printed and optionally written as JSON (`diagnose`, `evaluate --adaptive`)."""
    from gibbon.evaluation.diagnose import diagnose as run_diagnose

    report = run_diagnose(model, data, progress=True, **{**kwargs, "suite": None if kwargs["suite"] == "none"
                                                         else kwargs["suite"]})
    for name, acc in report.accuracies.items():
        low, high = acc["interval"]
        out.print(f"{name:<28s} {acc['accuracy']:7.2%}  [{low:.1%}, {high:.1%}]", highlight=False)
    out.print(report.checklist(), highlight=False, markup=False)  # "[ok]" is not a rich style tag
    if json_path is not None:
        from gibbon.evaluation.report import jsonable, write_json_atomic

        write_json_atomic(json_path, jsonable({**described, **report.to_dict()}))
        out.print(f"diagnosis written to {json_path}")
    return report


def _named(specs: List[str], option: str, trust_code: bool = False) -> dict:
    named = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise GibbonInputError(f"{option} takes NAME=PATH (PATH.safetensors, sklearn:PATH or onnx:PATH), got {item!r}")
        named[name] = _load_any(spec, trust_code)
    return named


@app.command()
def transfer(
    source: List[str] = typer.Option(..., "--source", help="NAME=SPEC crafted on; SPEC: PATH.safetensors, sklearn:PATH, onnx:PATH (black boxes via a substitute)."),
    target: List[str] = typer.Option(..., "--target", help="NAME=SPEC evaluated (predictions only)."),
    dataset: str = DatasetOpt,
    n: int = typer.Option(1000, "--n", help="Test images attacked (after the substitutes' seed images)."),
    seed_images: int = typer.Option(150, "--seed-images", help="Seed images of the substitutes of black-box sources."),
    substitute_shift: int = typer.Option(0, "--substitute-shift", help="Train those substitutes on copies shifted by up to N pixels (as `gibbon substitute --shift`; 0: the paper's algorithm)."),
    attack_spec: str = typer.Option("fgsm", "--attack", help="White-box attack NAME[:key=value,...]."),
    eps: float = typer.Option(0.3, "--eps", help="The attack's budget."),
    norm: str = typer.Option("linf", "--norm", help="linf, l2, l1 or l0."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the matrix as JSON here."),
    trust_code: bool = TrustCodeOpt,
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
):
    """Transfer rates of an attack from every source to every target (networks and techniques)."""
    from gibbon import data as gdata
    from gibbon.attacks import parse_attack
    from gibbon.core.norms import get_norm
    from gibbon.evaluation.inputs import resolve_attacks
    from gibbon.transfer import transfer_matrix

    check_seed_and_batch(seed, batch_size)
    norm = get_norm(norm).name
    attack_cfg = parse_attack(attack_spec)
    resolve_attacks([attack_cfg], norm, targeted=False)
    sources, targets = _named(source, "--source", trust_code), _named(target, "--target", trust_code)
    test = gdata.load(dataset, "test", n=seed_images + n)
    if len(test) <= seed_images:
        raise GibbonInputError(f"{dataset} has {len(test)} test images: fewer than --seed-images + 1")
    matrix = transfer_matrix(sources, targets, attack_cfg, test.x[seed_images:], test.y[seed_images:], eps=eps,
                             norm=norm, bounds=test.bounds, batch_size=batch_size, seed=seed,
                             substitute_seed_x=test.x[:seed_images], substitute_shift=substitute_shift)
    out.print(matrix.table())
    if json_path is not None:
        matrix.to_json(json_path)
        out.print(f"matrix written to {json_path}")


@app.command()
def zoo():
    """List the architectures and the cached trained models."""
    from rich.table import Table

    from gibbon import zoo as gzoo

    table = Table(title="architectures")
    table.add_column("name")
    table.add_column("description")
    for name, desc in gzoo.ARCHITECTURES.items():
        table.add_row(name, desc)
    out.print(table)
    cached = gzoo.list_cached()
    table = Table(title=f"cached models ({len(cached)})")
    for col in ("architecture", "dataset", "epochs", "seed", "test accuracy", "path"):
        table.add_column(col)
    for card in cached:
        acc = card.get("clean_test_accuracy")
        table.add_row(str(card.get("architecture")), str(card.get("dataset")), str(card.get("epochs")),
                      str(card.get("seed")), f"{acc:.2%}" if isinstance(acc, float) else "-", str(card.get("path", "")))
    out.print(table)


def _registry_table(title: str, registry: dict, column: str, describe) -> None:
    """Print a registry (attacks, defenses) as name | ``column`` | options with their defaults."""
    from rich.table import Table

    from gibbon.core.specs import dataclass_defaults

    table = Table(title=title)
    for col in ("name", column, "options (defaults)"):
        table.add_column(col)
    for name, cls in sorted(registry.items()):
        table.add_row(name, describe(cls), ", ".join(f"{k}={v}" for k, v in dataclass_defaults(cls).items()))
    out.print(table)


@app.command()
def attacks():
    """List the registered attacks with their norms and options."""
    from gibbon.attacks import ATTACKS

    _registry_table("attacks", ATTACKS, "norms", lambda cls: " ".join(cls.norms))


@app.command()
def defenses():
    """List the training defenses (`gibbon train --defense NAME:key=value`) with their options."""
    from gibbon.defenses import DEFENSES

    _registry_table("defenses", DEFENSES, "paper", lambda cls: cls.paper)


@app.command()
def reproduce(
    target_id: Optional[str] = typer.Argument(None, help="A reproduction ID; omit to list them."),
    json_dir: Path = typer.Option(Path("results/reproduce"), "--out", help="Folder for the JSON results."),
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """List or run the papers' headline results (docs/reproduction.md)."""
    from rich.table import Table

    from gibbon import reproduce as rep

    if target_id is None:
        table = Table(title="reproduction targets")
        for col in ("id", "paper", "claim"):
            table.add_column(col)
        for t in rep.TARGETS.values():
            table.add_row(t.id, t.paper, t.claim)
        out.print(table)
        return
    if target_id not in rep.TARGETS:
        raise GibbonInputError(f"unknown reproduction {target_id!r}; run `gibbon reproduce` to list them")
    outcome = rep.run(target_id, seed=seed, device=resolve_device(device))
    path = json_dir / f"{target_id}.json"
    rep.write_json(path, outcome)
    table = Table(title=f"{target_id}: {'PASS' if outcome['passed'] else 'FAIL'} ({outcome['seconds']:.0f} s)")
    for col in ("quantity", "paper", "ours", "target", "ok"):
        table.add_column(col)
    for row in outcome["rows"]:
        table.add_row(row["quantity"], str(row["paper"]), _format_ours(row), row["target"], "yes" if row["ok"] else "NO")
    out.print(table)
    out.print(f"written to {path}")


def _format_ours(row: dict) -> str:
    """A reproduction row's measured value: rates as percentages, other quantities (distances,
    ratios, rho) as plain numbers."""
    quantity = row["quantity"].lower()
    rate = any(word in quantity for word in ("accuracy", "success", "error", "fraction", "misclassified",
                                             "agreement", "rate"))
    measure = any(word in quantity for word in ("l2", "rho", "eps at"))
    return f"{row['ours']:.2%}" if rate and not measure else f"{row['ours']:.4g}"


privacy_app = typer.Typer(no_args_is_help=True, help="Training-data privacy: membership inference, PATE, audits.")
app.add_typer(privacy_app, name="privacy")


MIA_ATTACKS = ("loss", "lira", "lira-offline", "shadow")


def _shadow_based_mia(model, inside, outside, attack: str, *, shadows: int, arch: str, epochs: int, lr: float,
                      folder: Path, seed: int, batch_size: int):
    """LiRA or Shokri et al.'s attack on the pool members + non-members, shadows trained (or resumed) first."""
    import dataclasses

    import torch

    from gibbon.privacy.lira import lira_attack
    from gibbon.privacy.shadow import shadow_attack, train_shadows, zoo_trainer

    x, y = torch.cat([inside.x, outside.x]), torch.cat([inside.y, outside.y])
    members = torch.cat([torch.ones(len(inside.y), dtype=torch.bool), torch.zeros(len(outside.y), dtype=torch.bool)])
    pool = dataclasses.replace(inside, x=x, y=y, meta={})
    trainer = zoo_trainer(arch, pool, epochs=epochs, lr=lr)
    scores = train_shadows(trainer, x, y, n_shadows=shadows, seed=seed, out_dir=folder, progress=True)
    if attack == "shadow":
        return shadow_attack(model, x, y, scores, members, batch_size=batch_size, seed=seed)
    return lira_attack(model, x, y, scores, members, online=attack == "lira", batch_size=batch_size)


@privacy_app.command("mia")
def privacy_mia(
    model_spec: Optional[str] = typer.Option(None, "--model", help="PATH.safetensors, or pkg.module:factory with --weights."),
    weights: Optional[str] = WeightsOpt,
    oracle_spec: Optional[str] = typer.Option(None, "--oracle", help="A black box answering scores: sklearn:PATH, "
                                              "onnx:PATH or a gibbon serve URL http://HOST:PORT (query-counted)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="GIBBON_TOKEN", show_envvar=False,
                                        help="Bearer token for an http:// oracle (or set GIBBON_TOKEN, which keeps it "
                                             "out of the process list)."),
    dataset: str = DatasetOpt,
    members: str = typer.Option("train", "--members", help="Split the model was trained on (the members)."),
    non_members: str = typer.Option("test", "--non-members", help="Split it never saw."),
    n: int = typer.Option(1000, "--n", help="Members and non-members each (the first N of each split)."),
    out_dir: Path = typer.Option(Path("results/privacy"), "--out-dir", help="Where membership.json and .png go."),
    attack: str = typer.Option("loss", "--attack", help="loss (Yeom et al. 2018), lira (online), lira-offline "
                               "(Carlini et al. 2022) or shadow (Shokri et al. 2017)."),
    shadows: int = typer.Option(16, "--shadows", help="lira/shadow: shadow models, each on a random half of the "
                                "members + non-members pool."),
    shadow_arch: str = typer.Option("mlp-200-200", "--shadow-arch", help="lira/shadow: the shadows' architecture "
                                    "(mirror the target's)."),
    shadow_epochs: int = typer.Option(50, "--shadow-epochs", help="lira/shadow: epochs per shadow (Adam)."),
    shadow_lr: float = typer.Option(1e-3, "--shadow-lr", help="lira/shadow: the shadows' learning rate."),
    shadow_dir: Optional[Path] = typer.Option(None, "--shadow-dir", help="lira/shadow: where each shadow's scores "
                                              "are kept, so a rerun resumes (default OUT_DIR/shadows)."),
    trust_code: bool = TrustCodeOpt,
    batch_size: int = BatchOpt,
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """Membership inference: AUC and TPR at 0.1% and 1% FPR, ROC saved. The loss threshold needs nothing
    else; LiRA and the shadow-model attack first train shadows on halves of the members + non-members pool."""
    from gibbon import data as gdata
    from gibbon.oracles.base import QueryBudgetExceeded
    from gibbon.privacy import loss_threshold_attack, save_roc

    check_seed_and_batch(seed, batch_size)
    if n < 1:
        raise GibbonInputError(f"--n must be >= 1, got {n}")
    if attack not in MIA_ATTACKS:
        raise GibbonInputError(f"--attack must be one of {', '.join(MIA_ATTACKS)}, got {attack!r}")
    if attack != "loss" and (shadows < 2 or shadow_epochs < 1):
        raise GibbonInputError(f"--attack {attack} needs --shadows >= 2 (16 or more is usual) and --shadow-epochs >= 1")
    if members == non_members:
        raise GibbonInputError("--members and --non-members must be different splits")
    if (model_spec is None) == (oracle_spec is None):
        raise GibbonInputError("pass the model to attack: --model PATH or --oracle sklearn:PATH")
    device = resolve_device(device)
    inside, outside = gdata.load(dataset, members, n=n), gdata.load(dataset, non_members, n=n)
    model = (load_oracle(oracle_spec, token) if oracle_spec is not None
             else load_model(model_spec, weights, device, trust_code).eval())
    if oracle_spec is not None:
        check_oracle_fits(model, inside)
    else:
        check_model_fits(model, inside)
    try:
        if attack == "loss":
            result = loss_threshold_attack(model, inside, outside, batch_size=batch_size,
                                           device=None if oracle_spec is not None else device)
        else:
            result = _shadow_based_mia(model, inside, outside, attack, shadows=shadows, arch=shadow_arch,
                                       epochs=shadow_epochs, lr=shadow_lr, folder=shadow_dir or out_dir / "shadows",
                                       seed=seed, batch_size=batch_size)
    except QueryBudgetExceeded as err:
        raise GibbonInputError(f"{err}; the attack needs one query per member and non-member ({2 * n}; lower --n "
                               "or use a token with a larger budget)") from None
    if oracle_spec is not None:
        out.print(f"{model.total} queries asked", highlight=False)
    paths = save_roc(result, out_dir)
    out.print(result.summary(), highlight=False)
    out.print(f"written to {paths['json']} and {paths['png']}", soft_wrap=True)


@privacy_app.command("pate")
def privacy_pate(
    dataset: str = DatasetOpt,
    teachers: int = typer.Option(250, "--teachers", help="Teachers, each on a disjoint shard of the train split."),
    arch: str = typer.Option("lenet5", "--arch", help="Teacher and student architecture (see `gibbon zoo`)."),
    teacher_epochs: int = typer.Option(40, "--teacher-epochs", help="Epochs per teacher (Adam, batch 32)."),
    public: int = typer.Option(9000, "--public", help="The first N test images are the student's public inputs; "
                               "the rest test the student."),
    aggregator: str = typer.Option("confident-gnmax", "--aggregator", help="lnmax, gnmax or confident-gnmax."),
    queries: int = typer.Option(640, "--queries", help="Public inputs sent to the teachers (the first N)."),
    gamma: float = typer.Option(0.05, "--gamma", help="LNMax: Laplace noise of scale 1/gamma on each count."),
    threshold: float = typer.Option(200.0, "--threshold", help="Confident-GNMax: answer when the noisy top count "
                                    "reaches T."),
    sigma1: float = typer.Option(150.0, "--sigma1", help="Confident-GNMax: noise of the threshold check."),
    sigma2: float = typer.Option(40.0, "--sigma2", help="GNMax / Confident-GNMax: noise of the noisy argmax."),
    delta: float = typer.Option(1e-5, "--delta", help="Report epsilon at this delta."),
    student_epochs: int = typer.Option(60, "--student-epochs", help="Student epochs; 0: no student."),
    semi_supervised: bool = typer.Option(False, "--semi-supervised", help="Train the student with VAT on all "
                                         "public inputs (Miyato et al. 2018) as well as the answered labels."),
    votes_path: Optional[Path] = typer.Option(None, "--votes", help="Reuse the vote histograms of an earlier run "
                                              "(votes.npz) instead of training teachers."),
    out_dir: Path = typer.Option(Path("results/privacy/pate"), "--out-dir", help="Where votes.npz and pate.json go."),
    seed: int = SeedOpt,
    device: Optional[str] = DeviceOpt,
):
    """PATE (Papernot et al. 2017, 2018): teachers on disjoint shards, noisy aggregation of their votes,
    a student on the answered labels; data-dependent and data-independent epsilon."""
    import dataclasses

    from gibbon import data as gdata
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.privacy.pate import load_votes, run_pate, save_votes, train_teachers

    check_seed_and_batch(seed, 1)
    for name, value in (("--teachers", teachers), ("--public", public), ("--queries", queries)):
        if value < 1:
            raise GibbonInputError(f"{name} must be >= 1, got {value}")
    if queries > public:
        raise GibbonInputError(f"--queries ({queries}) cannot exceed --public ({public})")
    device = resolve_device(device)
    test = gdata.load(dataset, "test")
    if public >= len(test.y):
        raise GibbonInputError(f"--public must leave test images for the student: {dataset} has {len(test.y)}")
    public_x, public_y = test.x[:public], test.y[:public]
    if votes_path is not None:
        votes = load_votes(votes_path)["votes"]
        if len(votes) < queries:
            raise GibbonInputError(f"{votes_path} holds {len(votes)} queries' votes, fewer than --queries {queries}")
    else:
        train = gdata.load(dataset, "train")
        made = train_teachers(train, public_x, teachers=teachers, arch=arch, epochs=teacher_epochs, seed=seed,
                              device=device, progress=True)
        votes = made["votes"]
        save_votes(out_dir / "votes.npz", votes, predictions=made["predictions"], meta=made["meta"])
    held_out = dataclasses.replace(test, x=test.x[public:], y=test.y[public:], meta={})
    student = {} if student_epochs < 1 else dict(public_x=public_x, test=held_out, student_arch=arch, dataset=test,
                                                 student_epochs=student_epochs, semi_supervised=semi_supervised)
    result = run_pate(votes, public_y, aggregator=aggregator, gamma=gamma, threshold=threshold, sigma1=sigma1,
                      sigma2=sigma2, queries=queries, delta=delta, seed=seed, device=device, **student)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "pate.json", result.to_dict())
    cost = result.privacy
    shown = (f"PATE {aggregator}: {result.answered} of {result.queries} queries answered, labels "
             f"{result.label_accuracy:.2%} right; epsilon {cost.eps_data_dependent:.3f} data-dependent (not "
             f"releasable as is), {cost.eps_data_independent:.3f} data-independent, at delta {delta:g}")
    if result.student_accuracy is not None:
        shown += f"; student {result.student_accuracy:.2%} on the last {len(held_out.y)} test images"
    out.print(shown, highlight=False)
    out.print(f"written to {out_dir / 'pate.json'}", soft_wrap=True)


from gibbon.evaluation.report_command import report as _report  # noqa: E402
from gibbon.experiments.command import run as _run  # noqa: E402
from gibbon.extraction.command import steal as _steal  # noqa: E402
from gibbon.physical.command import physical_app as _physical_app  # noqa: E402
from gibbon.poisoning.command import poison_app as _poison_app  # noqa: E402
from gibbon.serve.command import serve as _serve_command  # noqa: E402 - fastapi/uvicorn load inside the command

app.command("serve")(_serve_command)
app.add_typer(_poison_app, name="poison")
app.add_typer(_physical_app, name="physical")
app.command("steal")(_steal)
app.command("run")(_run)
app.command("report")(_report)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except GibbonInputError as err:
        console.print(f"[red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except FileNotFoundError as err:
        console.print(f"[red]error:[/] file not found: {err.filename}; check the path", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

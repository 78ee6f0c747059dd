"""The ``gibbon`` command: train, evaluate, attack, zoo, reproduce.

Bad arguments end with a one-line ``error: ...`` that says what to do, and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from gibbon.core.checks import GibbonInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="gibbon: attack, defend and evaluate machine learning models.")
console = Console(stderr=True)
out = Console()

# The main job (`gibbon evaluate` with no model): Madry et al.'s MNIST CNN, trained once and cached.
MAIN_ARCH, MAIN_DATASET, MAIN_EPOCHS, MAIN_N = "madry-cnn", "mnist", 2, 1000
MAIN_ATTACKS = ["fgsm", "bim:early_stop=true", "pgd:steps=40,step_size=0.01,random_start=true,early_stop=true"]
MAIN_EPS = [0.1, 0.2, 0.3]

SeedOpt = typer.Option(0, "--seed", help="Seed for every random choice (training order, random starts).")
BatchOpt = typer.Option(250, "--batch-size", help="Mini-batch size for attacks and evaluation.")
DeviceOpt = typer.Option(None, "--device", help="cuda, cuda:1, cpu ... (default: cuda if available, else cpu).")
DatasetOpt = typer.Option("mnist", "--dataset", help="digits, mnist, cifar10, synthetic or npz:PATH.")
SplitOpt = typer.Option("test", "--split", help="train, val or test.")


def resolve_device(device: Optional[str]) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GibbonInputError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return device


def check_seed_and_batch(seed: int, batch_size: int) -> None:
    if batch_size < 1:
        raise GibbonInputError(f"--batch-size must be >= 1, got {batch_size}")
    if seed < 0:
        raise GibbonInputError(f"--seed must be >= 0, got {seed}")


def load_model(spec: str, weights: Optional[str], device: str):
    """A saved gibbon model (PATH.safetensors) or a user's ``pkg.module:factory`` with --weights."""
    from gibbon import zoo

    if ":" in spec and not Path(spec).exists() and not spec.endswith(".safetensors"):
        if weights is None:
            raise GibbonInputError("a model given as pkg.module:factory needs --weights F.safetensors")
        return zoo.load_user_model(spec, weights=weights).to(device)
    return zoo.load(spec, device=device)


def check_model_fits(model, data) -> None:
    import torch

    with torch.no_grad():
        try:
            logits = model(data.x[:2].to(next(model.parameters()).device))
        except RuntimeError as err:
            raise GibbonInputError(
                f"the model does not accept {data.name} inputs of shape {tuple(data.x.shape[1:])} "
                f"({str(err).splitlines()[0]}); pick the dataset the model was trained on"
            ) from None
    if logits.ndim != 2 or logits.shape[1] < data.num_classes:
        raise GibbonInputError(
            f"the model outputs shape {tuple(logits.shape)}, but {data.name} has {data.num_classes} classes"
        )


def main_job_model(seed: int, device: str):
    from gibbon import zoo

    console.print(f"[bold]main job[/]: {MAIN_ARCH} on {MAIN_DATASET} ({MAIN_EPOCHS} epochs, trained once and cached)")
    path = zoo.trained(MAIN_ARCH, MAIN_DATASET, epochs=MAIN_EPOCHS, seed=seed)
    console.print(f"model: {path}", soft_wrap=True)
    return zoo.load(path, device=device)


@app.command()
def train(
    arch: str = typer.Option(..., "--arch", help="Architecture name (see `gibbon zoo`)."),
    dataset: str = DatasetOpt,
    epochs: int = typer.Option(2, "--epochs", help="Training epochs."),
    out_path: Path = typer.Option(..., "--out", help="Where to write PATH.safetensors (+ PATH.json card)."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate (Adam)."),
    n_train: Optional[int] = typer.Option(None, "--n", help="Train on the first N training images only."),
    seed: int = SeedOpt,
    batch_size: int = typer.Option(128, "--batch-size", help="Training mini-batch size."),
    device: Optional[str] = DeviceOpt,
):
    """Train a zoo architecture; checkpoints every epoch and resumes after a kill."""
    import torch

    from gibbon import data as gdata
    from gibbon import zoo

    check_seed_and_batch(seed, batch_size)
    if epochs < 1:
        raise GibbonInputError(f"--epochs must be >= 1, got {epochs}")
    if out_path.suffix != ".safetensors":
        raise GibbonInputError(f"--out must end in .safetensors, got {out_path}")
    device = resolve_device(device)
    train_set = gdata.load(dataset, "train", n=n_train)
    val_set, test_set = gdata.load(dataset, "val"), gdata.load(dataset, "test")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = zoo.build(arch, train_set).to(device)
    ckpt = out_path.with_name(out_path.stem + ".ckpt")
    result = zoo.fit(model, train_set, epochs=epochs, batch_size=batch_size, lr=lr, val=val_set, seed=seed,
                     checkpoint_dir=ckpt, device=device)
    acc = zoo.accuracy(model, test_set)
    card = {"architecture": arch, "dataset": dataset, "seed": seed, "epochs": epochs, "lr": lr,
            "n_train": len(train_set), "clean_test_accuracy": acc, "history": result.history}
    zoo.save(model, out_path, card, dataset=train_set)
    out.print(f"saved {out_path} (test accuracy {acc:.2%})")


@app.command()
def evaluate(
    model_spec: Optional[str] = typer.Option(None, "--model", help="PATH.safetensors, or pkg.module:factory with --weights. Omit for the main job."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights for a pkg.module:factory model."),
    dataset: str = DatasetOpt,
    split: str = SplitOpt,
    n: Optional[int] = typer.Option(None, "--n", help="Evaluate on the first N samples."),
    attack: List[str] = typer.Option([], "--attack", help="NAME[:key=value,...]; repeat for several."),
    eps: List[float] = typer.Option([], "--eps", help="Budget; repeat for several."),
    norm: str = typer.Option("linf", "--norm", help="linf, l2, l1 or l0."),
    cascade: bool = typer.Option(False, "--cascade", help="Attack only samples still robust (fast worst case)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="reliable (AutoAttack's ensemble) or quick; implies --cascade."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Resume file for long evaluations."),
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
    device: Optional[str] = DeviceOpt,
):
    """Robust accuracy of a model under attacks at several budgets, with the per-sample worst case."""
    from gibbon import data as gdata
    from gibbon.attacks import parse_attack
    from gibbon.core.norms import get_norm
    from gibbon.evaluation import evaluate as run_evaluation
    from gibbon.evaluation.inputs import resolve_attacks
    from gibbon.evaluation.suites import suite_attacks

    check_seed_and_batch(seed, batch_size)
    device = resolve_device(device)
    norm = get_norm(norm).name
    configs = [parse_attack(spec) for spec in (suite_attacks(suite) if suite else []) + list(attack)]
    resolve_attacks(configs, norm, targeted=False)  # fail fast on a norm the attack does not define
    if model_spec is None:
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
    model = main_job_model(seed, device) if model_spec is None else load_model(model_spec, weights, device)
    check_model_fits(model, data)
    report = run_evaluation(model, data, configs, eps, norm=norm, cascade=cascade or suite is not None, batch_size=batch_size, seed=seed,
                            device=device, checkpoint=checkpoint, progress=True)
    out.print(report.table())
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if json_path is not None:
        report.to_json(json_path)
        out.print(f"report written to {json_path}")


@app.command()
def attack(
    model_spec: str = typer.Option(..., "--model", help="PATH.safetensors, or pkg.module:factory with --weights."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights for a pkg.module:factory model."),
    dataset: str = DatasetOpt,
    split: str = SplitOpt,
    attack_spec: str = typer.Option(..., "--attack", help="NAME[:key=value,...]"),
    eps: Optional[float] = typer.Option(None, "--eps", help="Budget (required by budget attacks)."),
    norm: str = typer.Option("linf", "--norm", help="linf, l2, l1 or l0."),
    target: Optional[str] = typer.Option(None, "--target", help="CLASS, least-likely or random (default: untargeted)."),
    n: int = typer.Option(100, "--n", help="Attack the first N samples."),
    out_path: Path = typer.Option(..., "--out", help="Write x, x_adv, y, pred_adv, success, distance to PATH.npz."),
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
    model = load_model(model_spec, weights, device)
    check_model_fits(model, data)
    result = run_attack(model, data, cfg, eps=eps, norm=norm_obj.name, target=target, batch_size=batch_size, seed=seed,
                   device=device)
    save_npz(out_path, result)
    out.print(f"{cfg.name}: success {result.success.float().mean():.2%} on {len(data)} samples; "
              f"median {norm_obj.name} distance {result.distance[result.success].median() if result.success.any() else float('nan'):.4f}; "
              f"written to {out_path}")


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


@app.command()
def attacks():
    """List the registered attacks with their norms and options."""
    import dataclasses

    from rich.table import Table

    from gibbon.attacks import ATTACKS

    table = Table(title="attacks")
    for col in ("name", "norms", "options (defaults)"):
        table.add_column(col)
    for name, cls in sorted(ATTACKS.items()):
        opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls))
        table.add_row(name, " ".join(cls.norms), opts)
    out.print(table)


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
        table.add_row(row["quantity"], row["paper"], f"{row['ours']:.2%}", row["target"], "yes" if row["ok"] else "NO")
    out.print(table)
    out.print(f"written to {path}")


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

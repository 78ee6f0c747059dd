"""``gibbon physical ...``: input-agnostic attacks (universal perturbations), saved as JSON and images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from gibbon.core.checks import GibbonInputError, check_seed_and_batch, parse_number_list, resolve_device

physical_app = typer.Typer(no_args_is_help=True, help="Input-agnostic and physical-world style attacks: universal "
                           "perturbations.")
out = Console()
METHODS = ("sgd", "algorithm-1")


@physical_app.command("universal")
def universal(
    model_path: Path = typer.Option(..., "--model", help="The model to fool, PATH.safetensors."),
    dataset: str = typer.Option("mnist", "--dataset", help="digits, mnist, cifar10, synthetic or npz:PATH."),
    eps: str = typer.Option("0.1,0.2,0.3", "--eps", help="Budgets, a comma list."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    method: str = typer.Option("sgd", "--method", help="sgd (Shafahi et al. 2020, stochastic projected ascent) or "
                               "algorithm-1 (Moosavi-Dezfooli et al. 2017, DeepFool updates)."),
    n_train: int = typer.Option(5000, "--n-train", help="Training images the perturbation is computed on."),
    n_test: int = typer.Option(2000, "--n-test", help="Held-out test images it is scored on."),
    epochs: int = typer.Option(5, "--epochs", help="sgd: passes over the training images; algorithm-1: at most."),
    transfer_to: List[Path] = typer.Option([], "--transfer-to", help="Other models to score the same "
                                           "perturbation on (transfer across architectures); repeat."),
    out_dir: Path = typer.Option(Path("results/physical/universal"), "--out-dir", help="Where universal.json and "
                                 "universal.png go."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let a model card's factory run."),
    seed: int = typer.Option(0, "--seed", help="Seed for the image draw and the pass order."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu ... (default: cuda if available)."),
):
    """Universal adversarial perturbation: one v for all inputs; fooling rate on held-out images per eps."""
    from gibbon import data, zoo
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.physical.universal import fooling_rate, universal_perturbation, universal_sgd
    from gibbon.poisoning.plots import save_prediction_rows

    check_seed_and_batch(seed, 1)
    if method not in METHODS:
        raise GibbonInputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    budgets = parse_number_list(eps, "--eps", fractions=norm == "linf")
    device = resolve_device(device)
    model = zoo.load(model_path, device=device, trust_code=trust_code).eval()
    others = {str(p): zoo.load(p, device=device, trust_code=trust_code).eval() for p in transfer_to}
    train = data.load(dataset, "train", n=n_train, seed=seed)
    test = data.load_at_most(dataset, "test", n_test)
    runs = []
    for e in budgets:
        if method == "sgd":
            found = universal_sgd(model, train.x, eps=e, norm=norm, epochs=epochs, bounds=train.bounds, seed=seed)
        else:
            found = universal_perturbation(model, train.x, eps=e, norm=norm, max_passes=epochs, bounds=train.bounds,
                                           seed=seed, progress=True)
        held_out = fooling_rate(model, test.x, found.perturbation, bounds=test.bounds)
        runs.append({**found.to_dict(), "held_out_fooling_rate": held_out,
                     "transfer": {name: fooling_rate(m, test.x, found.perturbation, bounds=test.bounds)
                                  for name, m in others.items()}})
        out.print(f"eps {e:g}: fools {found.fooling_rate:.1%} of the training images, {held_out:.1%} held out"
                  + "".join(f"; {name}: {rate:.1%}" for name, rate in runs[-1]["transfer"].items()), highlight=False)
    write_json_atomic(out_dir / "universal.json", {"model": str(model_path), "dataset": dataset, "method": method,
                                                   "norm": norm, "n_train": len(train.y), "n_test": len(test.y),
                                                   "seed": seed, "runs": runs})
    v = found.perturbation
    lo, hi = test.bounds
    sample = test.x[:8]
    shifted = (sample + v).clamp(lo, hi)
    shown = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)
    save_prediction_rows(out_dir / "universal.png", model,
                         {"clean": sample, f"v (eps {budgets[-1]:g}, rescaled)": shown.unsqueeze(0).expand_as(sample),
                          "clean + v": shifted}, labelled=("clean", "clean + v"))
    from gibbon.zoo.io import write_npz_atomic

    write_npz_atomic(out_dir / "universal.npz", {"perturbation": v.numpy(), "eps": float(budgets[-1])})
    out.print(f"written to {out_dir / 'universal.json'}, universal.png and universal.npz", soft_wrap=True)


@physical_app.command("survival")
def survival_command(
    model_path: Path = typer.Option(..., "--model", help="The model, PATH.safetensors."),
    dataset: str = typer.Option("mnist", "--dataset", help="digits, mnist, cifar10, synthetic or npz:PATH."),
    n: int = typer.Option(500, "--n", help="Test images (the first N)."),
    eps: str = typer.Option("0.1,0.2,0.3", "--eps", help="L-inf budgets, a comma list."),
    attacks: str = typer.Option("fgsm,bim,illc", "--attacks", help="Attacks whose examples are photographed."),
    eot: int = typer.Option(8, "--eot", help="Also BIM against EOT over the photo with this many draws (0: no)."),
    draws: int = typer.Option(2, "--draws", help="Random photos per image."),
    out_dir: Path = typer.Option(Path("results/physical/survival"), "--out-dir", help="Where survival.json goes."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let a model card's factory run."),
    seed: int = typer.Option(0, "--seed", help="Seed for the photos and the attacks."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu ... (default: cuda if available)."),
):
    """Kurakin et al. 2016: the share of adversarial examples still adversarial after a simulated photo."""
    from gibbon import data, zoo
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.physical.photo import PhotoPipeline, PhotoTransform, survival_table

    check_seed_and_batch(seed, 1)
    if n < 1 or eot < 0:
        raise GibbonInputError("--n must be >= 1 and --eot >= 0")
    device = resolve_device(device)
    model = zoo.load(model_path, device=device, trust_code=trust_code).eval()
    test = data.load_at_most(dataset, "test", n)
    transform = PhotoTransform()
    names = [a.strip() for a in attacks.split(",") if a.strip()]
    rows = survival_table(model, test, names, parse_number_list(eps, "--eps", fractions=True),
                          PhotoPipeline(transform, test.bounds), draws=draws, eot_samples=eot, seed=seed)
    write_json_atomic(out_dir / "survival.json", {"model": str(model_path), "dataset": dataset, "n": len(test.y),
                                                  "photo": transform.to_dict(), "draws": draws, "rows": rows})
    for row in rows:
        out.print(f"{row['attack']} eps {row['eps']:g}: {row['survival']:.1%} of {row['counted']} adversarial "
                  "examples survive the photo", highlight=False)
    out.print(f"written to {out_dir / 'survival.json'}", soft_wrap=True)


@physical_app.command("patch")
def patch_command(
    model_path: Path = typer.Option(..., "--model", help="The model, PATH.safetensors."),
    dataset: str = typer.Option("mnist", "--dataset", help="digits, mnist, cifar10, synthetic or npz:PATH."),
    target: int = typer.Option(..., "--target", help="The class the patch makes the model answer."),
    areas: str = typer.Option("0.05,0.1,0.2,0.3", "--area", help="Patch shares of the image area, a comma list."),
    n_train: int = typer.Option(2000, "--n-train", help="Training images the patch is trained on."),
    n_test: int = typer.Option(1000, "--n-test", help="Held-out test images it is scored on."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training images (Adam, batch 50)."),
    lr: float = typer.Option(0.05, "--lr", help="Adam learning rate on the patch pixels."),
    out_dir: Path = typer.Option(Path("results/physical/patch"), "--out-dir", help="Where patch.json/png/npz go."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let a model card's factory run."),
    seed: int = typer.Option(0, "--seed", help="Seed for the image draw and the placements."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu ... (default: cuda if available)."),
):
    """Adversarial patch (Brown et al. 2017): targeted success against patch size, random placement."""
    import torch

    from gibbon import data, zoo
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.physical.patch import paste, patch_side, patch_success, random_placements, train_patch
    from gibbon.poisoning.backdoor import check_target_label
    from gibbon.poisoning.plots import save_prediction_rows
    from gibbon.zoo.io import write_npz_atomic

    check_seed_and_batch(seed, 1)
    shares = parse_number_list(areas, "--area", fractions=True)
    device = resolve_device(device)
    model = zoo.load(model_path, device=device, trust_code=trust_code).eval()
    train = data.load_at_most(dataset, "train", n_train, seed=seed)
    test = data.load_at_most(dataset, "test", n_test)
    check_target_label(target, test.num_classes)
    for share in shares:
        patch_side(share, train.input_shape)  # every size checked before any training
    runs, patches = [], {}
    for share in shares:
        found = train_patch(model, train.x, target, area=share, epochs=epochs, lr=lr, bounds=train.bounds, seed=seed)
        rate = patch_success(model, test.x, test.y, found, seed=seed + 1)
        runs.append({**found.to_dict(), "success": rate})
        patches[f"area_{share:g}"] = found.patch.numpy()
        out.print(f"patch {100 * share:g}% of the image: target {target} on {rate:.1%} of held-out images",
                  highlight=False)
    write_json_atomic(out_dir / "patch.json", {"model": str(model_path), "dataset": dataset, "target": target,
                                               "runs": runs})
    write_npz_atomic(out_dir / "patch.npz", patches)
    sample = test.x[test.y != target][:8]
    where = random_placements(len(sample), found.patch.shape[-1], sample.shape[1:], max_angle=20.0, scale=(0.8, 1.2),
                              generator=torch.Generator().manual_seed(seed))
    patched = paste(sample, found.patch, where)
    save_prediction_rows(out_dir / "patch.png", model, {"clean": sample, f"patched ({100 * shares[-1]:g}%)": patched})
    out.print(f"written to {out_dir / 'patch.json'}, patch.png and patch.npz", soft_wrap=True)

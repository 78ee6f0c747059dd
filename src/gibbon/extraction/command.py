"""``gibbon steal``: copy a black-box model through its prediction API, query-counted and resumable.

The answers are what costs (a remote API charges per query): they are written to an ``.npz``
store after every batch, so a killed run started again pays only for the queries not yet
answered. The copy is saved as safetensors with a card saying where it came from (never the token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gibbon.core.checks import GibbonInputError, check_seed_and_batch, parse_number_list, resolve_device

out = Console()
METHODS = ("knockoff", "jacobian", "equation")
POOL_HELP = ("The thief's images for knockoff: DATASET[:SPLIT] (e.g. mnist:train; other shapes are fitted into the "
             "victim's frame), digits (the 1,797 scikit-learn digits plus 5 affine copies each) or noise (the control).")


def _pool(spec: str, shape, seed: int, bounds):
    from gibbon import data
    from gibbon.extraction.pools import digits_pool, fit_into, noise_pool

    if spec == "digits":
        return digits_pool(shape, seed=seed)
    if spec.startswith("noise"):
        _, _, count = spec.partition(":")
        return noise_pool(int(count) if count.isdigit() else 50_000, shape, seed=seed, bounds=bounds)
    name, _, split = spec.partition(":")
    pool = data.load(name, split or "train")
    return pool.x if tuple(pool.x.shape[1:]) == tuple(shape) else fit_into(pool.x, shape, bounds=bounds)


def steal(
    oracle_spec: str = typer.Option(..., "--oracle", help="The victim: http://HOST:PORT (gibbon serve), "
                                    "sklearn:PATH.skops, onnx:PATH.onnx or a zoo PATH.safetensors."),
    token: Optional[str] = typer.Option(None, "--token", help="The API token (default: $GIBBON_TOKEN)."),
    budget: int = typer.Option(..., "--budget", help="Queries to spend in all (fidelity checks included)."),
    method: str = typer.Option("knockoff", "--method", help="knockoff (Orekondy et al. 2019), jacobian (Papernot "
                               "et al. 2017, labels only) or equation (Tramer et al. 2016, softmax regression)."),
    out_path: Path = typer.Option(..., "--out", help="Where the copy goes, PATH.safetensors (card beside it)."),
    dataset: str = typer.Option("mnist", "--dataset", help="The victim's task: its input shape and classes; the "
                                "labelled test split scores the copy for free."),
    pool_spec: str = typer.Option("mnist:train", "--pool", help=POOL_HELP),
    arch: str = typer.Option("lenet5", "--arch", help="The copy's architecture (see `gibbon zoo`)."),
    curve: Optional[str] = typer.Option(None, "--curve", help="Knockoff: query counts to train a copy at, a comma "
                                        "list (the answers are paid once, for the budget), e.g. 100,1000,10000."),
    fidelity_queries: int = typer.Option(0, "--fidelity-queries", help="Test images whose victim label is bought "
                                         "(out of --budget) to measure fidelity; 0: accuracy only."),
    epochs: int = typer.Option(5, "--epochs", help="Training epochs of each copy (knockoff: or more, to --min-steps)."),
    min_steps: int = typer.Option(1000, "--min-steps", help="Knockoff: at least this many optimizer steps per copy "
                                  "(a copy of 100 answers needs as many updates as one of 10,000)."),
    answers: Optional[Path] = typer.Option(None, "--answers", help="Store of the answers paid for (default: "
                                           "OUT.answers.npz); a rerun resumes from it."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the summary here (default OUT.json "
                                             "is the card)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Knockoff: plot fidelity / accuracy vs queries here (PNG)."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let a local model card's factory run."),
    seed: int = typer.Option(0, "--seed", help="Seed for the pool's order and the copy's training."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu ... for the copy's training."),
):
    """Steal a model through its prediction API: train a copy on its answers, save it as safetensors."""
    import torch

    from gibbon import data, zoo
    from gibbon.evaluation.inputs import check_oracle_fits
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.oracles import Oracle
    from gibbon.oracles.http import ServerError
    from gibbon.oracles.loading import load_black_box
    from gibbon.extraction.knockoff import agreement
    from gibbon.transfer._batches import predicted_labels

    check_seed_and_batch(seed, 1)
    if budget <= 0:
        raise GibbonInputError(f"--budget must be a number of queries >= 1, got {budget}")
    if method not in METHODS:
        raise GibbonInputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 <= fidelity_queries < budget:
        raise GibbonInputError(f"--fidelity-queries must be >= 0 and leave queries to steal with (< --budget {budget})")
    if epochs < 1 or min_steps < 0:
        raise GibbonInputError(f"--epochs must be >= 1 and --min-steps >= 0, got {epochs} and {min_steps}")
    if out_path.suffix != ".safetensors":
        raise GibbonInputError(f"--out must end in .safetensors, got {out_path}")
    budgets = [int(b) for b in parse_number_list(curve, "--curve")] if curve else []
    if any(b < 1 or b > budget - fidelity_queries or b != int(b) for b in budgets):
        raise GibbonInputError(f"--curve takes whole query counts from 1 to the stealing budget "
                               f"{budget - fidelity_queries}, got {curve}")
    device = resolve_device(device)
    test = data.load(dataset, "test")
    victim = load_black_box(oracle_spec, trust_code, token, output="auto")
    check_oracle_fits(victim, test)  # a server states its shape for free; a local model is probed (free too)
    oracle = Oracle(victim, max_total=budget)
    shape = tuple(test.x.shape[1:])
    def make():  # a fresh copy per curve point, each with the same seeded initial weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return zoo.build(arch, test).to(device)

    student = make()
    # fidelity is measured on the last test images; their victim labels are bought first, out of the budget
    eval_x, eval_y = (test.x[-fidelity_queries:], test.y[-fidelity_queries:]) if fidelity_queries else (test.x, test.y)
    store = answers or out_path.with_name(out_path.stem + ".answers.npz")
    summary = {"oracle": oracle_spec, "method": method, "dataset": dataset, "arch": arch, "budget": budget,
               "seed": seed}
    pool = _pool(pool_spec, shape, seed, test.bounds) if method == "knockoff" else None
    if pool is not None and len(pool) < budget - fidelity_queries:  # checked before any query is paid for
        raise GibbonInputError(f"the pool has {len(pool)} images but --budget asks {budget - fidelity_queries} (each "
                               "is asked once); lower --budget or pick a larger --pool")
    try:
        victim_labels = predicted_labels(oracle, eval_x, 256) if fidelity_queries else None
        if method == "knockoff":
            summary.update(_knockoff(oracle, pool, make, budget - fidelity_queries, budgets, (eval_x, eval_y, victim_labels), epochs, min_steps, seed, store,
                                     len(test.classes)))
            student = summary.pop("student")
            summary["pool"] = pool_spec
        elif method == "jacobian":
            from gibbon.transfer import train_substitute

            result = train_substitute(oracle, data.load(dataset, "val").x[:150], student, rounds=20, epochs=epochs,
                                      reservoir_from=6, reservoir_size=400, bounds=test.bounds,
                                      classes=test.classes, seed=seed, progress=True)
            summary.update({k: v for k, v in result.to_dict().items() if k in ("queries", "training_points",
                                                                                  "stopped_by_budget")})
        else:
            from gibbon.extraction.equation_solving import extract_softmax_regression

            result = extract_softmax_regression(oracle, shape, len(test.classes), queries=budget - fidelity_queries,
                                                placement="boundary", seed=seed)
            student = zoo.build("softmax-regression", test)
            student.load_state_dict(result.model.state_dict())
            summary.update(result.to_dict())
    except ServerError as err:
        kept = f"; the answers paid for are kept in {store}: rerun the same command to resume" if pool is not None else ""
        raise GibbonInputError(f"the server failed mid-way ({err}){kept}") from None
    if victim_labels is not None:
        summary["fidelity"] = agreement(student.to(device), eval_x, victim_labels.cpu())
    summary["queries_spent"] = oracle.total
    summary["accuracy"] = zoo.accuracy(student.to(device), test)
    zoo.save(student.cpu(), out_path, dataset=test, stolen={k: v for k, v in summary.items() if k != "curve"})
    if json_path is not None:
        write_json_atomic(json_path, summary)
    if plot is not None and summary.get("curve"):
        from gibbon.extraction.plots import plot_curve

        plot_curve(summary["curve"], plot, title=f"{method} copy ({arch}) of {oracle_spec}")
    fid = f", fidelity {summary['fidelity']:.2%}" if "fidelity" in summary else ""
    out.print(f"{method}: {oracle.total} queries, copy accuracy {summary['accuracy']:.2%}{fid}; saved to {out_path}",
              highlight=False, soft_wrap=True)
    return summary


def _knockoff(oracle, pool, make, budget, budgets, held_out, epochs, min_steps, seed, store, num_classes) -> dict:
    from gibbon.extraction.knockoff import knockoff_nets

    eval_x, eval_y, victim_labels = held_out
    result = knockoff_nets(oracle, pool, make, budgets=[*budgets, budget], num_classes=num_classes, eval_x=eval_x,
                           eval_y=eval_y, victim_labels=victim_labels, epochs=epochs, min_steps=min_steps, seed=seed, store=store, progress=True)
    for point in result.curve:
        fid = "" if point["fidelity"] is None else f", fidelity {point['fidelity']:.2%}"
        out.print(f"copy trained on {point['queries']} answers: accuracy {point['accuracy']:.2%}{fid}", highlight=False)
    return {"student": result.student, **result.to_dict()}

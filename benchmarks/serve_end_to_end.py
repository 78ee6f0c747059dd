"""Black-box attacks end to end over the network: ``gibbon serve`` a CNN, attack it through ``HttpOracle``.

The target is the cached MNIST LeNet-5 (``zoo.trained("lenet5", "mnist", epochs=5)``), served
by ``gibbon serve --output probs`` in a subprocess on 127.0.0.1 with four tokens:

* A, the substitute attacker: Papernot et al. 2017 (arXiv:1602.02697) through
  ``HttpOracle(output="label")``: the MLP 200-200 substitute, 150 seed test images, rho = 6
  augmentations, lambda 0.1 (sign flipped every 3 rounds), then FGSM eps 0.3 crafted on it for
  the next 2,000 test images and sent to the API (as ``gibbon.reproductions.blackbox`` does
  locally);
* B, the decision-based attacker: HopSkipJump (L2, untargeted) on 20 test images the model
  gets right, 1,000 queries per image, through ``Oracle(HttpOracle(...), output="label")``;
* C, an ordinary client: 2,000 test images in requests of 50;
* an admin token that reads ``GET /v1/admin/alerts`` at the end.

Records success rates, queries (client counter and server count) and each token's PRADA verdict
into ``benchmarks/results/serve_end_to_end.json``; exits 1 unless A is flagged and C is not.

    mkdir -p benchmarks/results && OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_end_to_end.py | tee benchmarks/results/serve_end_to_end.log
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import RESULTS, start_server, stop_server  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hsj-images", type=int, default=20)
    ap.add_argument("--hsj-queries", type=int, default=1000, help="HopSkipJump budget per image")
    ap.add_argument("--eval", type=int, default=2000, help="images attacked with the substitute's FGSM")
    ap.add_argument("--benign", type=int, default=2000, help="ordinary test images sent by token C")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "serve_end_to_end.json"))
    args = ap.parse_args(argv)

    import httpx
    import torch

    from gibbon import data, zoo
    from gibbon.attacks import FGSM, hopskipjump
    from gibbon.core.norms import L2
    from gibbon.oracles import HttpOracle, Oracle
    from gibbon.transfer import substitute_attack

    torch.set_num_threads(1)
    model_path = zoo.trained("lenet5", "mnist", epochs=5, seed=args.seed, progress=False)
    local = zoo.load(model_path).eval()
    test = data.load("mnist", "test")
    names = ("substitute", "hopskipjump", "benign", "admin")
    tokens = {n: secrets.token_urlsafe(24) for n in names}
    entries = [{"token": tokens["substitute"], "name": "substitute", "budget": 20_000, "rate": 50_000.0, "burst": 5000},
               {"token": tokens["hopskipjump"], "name": "hopskipjump", "budget": args.hsj_images * args.hsj_queries,
                "rate": 50_000.0, "burst": 5000},
               {"token": tokens["benign"], "name": "benign", "budget": 10_000, "rate": 50_000.0, "burst": 5000},
               {"token": tokens["admin"], "name": "admin", "admin": True, "budget": None, "rate": 1000.0, "burst": 100}]
    result = {"target": {"model": "lenet5 mnist (zoo.trained epochs=5)", "path": str(model_path),
                         "clean_test_accuracy": local.gibbon_card.get("clean_test_accuracy")}}
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(model_path, entries, Path(tmp) / "logs", RESULTS / "serve_end_to_end.server.log",
                                 "--output", "probs")
        try:
            # A: Papernot et al.'s substitute attack, labels only
            t0 = time.perf_counter()
            remote = HttpOracle(url, tokens["substitute"], output="label")
            seeds, x_eval, y_eval = test.x[:150], test.x[150:150 + args.eval], test.y[150:150 + args.eval]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                substitute = zoo.build("mlp-200-200", test)
            sub = substitute_attack(remote, seeds, substitute, x_eval, y_eval, FGSM(), eps=0.3, rounds=6, step=0.1,
                                    seed=args.seed, classes=test.classes)
            result["substitute"] = {**sub.to_dict(), "client_queries": remote.total, "requests": remote.requests,
                                    "seconds": round(time.perf_counter() - t0, 1)}
            print("substitute:", json.dumps(result["substitute"]), flush=True)

            # B: HopSkipJump, decision-based, per-image budget
            t0 = time.perf_counter()
            pool_x, pool_y = test.x[2200:2400], test.y[2200:2400]
            with torch.no_grad():
                right = local(pool_x).argmax(1) == pool_y
            x, y = pool_x[right][:args.hsj_images], pool_y[right][:args.hsj_images]
            remote_b = HttpOracle(url, tokens["hopskipjump"])
            oracle = Oracle(remote_b, output="label")
            x_adv = hopskipjump(oracle, x, y, norm="l2", max_queries=args.hsj_queries,
                                generator=torch.Generator().manual_seed(args.seed))
            with torch.no_grad():
                fooled = local(x_adv).argmax(1) != y
            dist = L2.distance(x_adv - x)
            result["hopskipjump"] = {
                "images": len(x), "max_queries_per_image": args.hsj_queries, "success": float(fooled.float().mean()),
                "median_l2": float(dist[fooled].median()) if fooled.any() else None,
                "success_at_l2_2.0": float((fooled & (dist <= 2.0)).float().mean()),
                "success_at_l2_1.5": float((fooled & (dist <= 1.5)).float().mean()),
                "queries": oracle.total, "max_queries_used_by_an_image": int(oracle.queries.max()),
                "client_queries": remote_b.total, "requests": remote_b.requests,
                "seconds": round(time.perf_counter() - t0, 1)}
            print("hopskipjump:", json.dumps(result["hopskipjump"]), flush=True)

            # C: an ordinary client
            remote_c = HttpOracle(url, tokens["benign"], batch_size=50)
            xb, yb = test.x[5000:5000 + args.benign], test.y[5000:5000 + args.benign]
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"})
            answers, stats = [], []
            for chunk in xb.split(50):  # the benign token's W after every request, to report its lowest
                answers.append(remote_c(chunk))
                mine = [t for t in admin.get("/v1/admin/alerts").json()["tokens"] if t["name"] == "benign"][0]
                if mine["statistic"] is not None:
                    stats.append(mine["statistic"])
            answers = torch.cat(answers)
            result["benign"] = {"images": len(xb), "accuracy": float((answers.argmax(1) == yb).float().mean()),
                                "client_queries": remote_c.total, "requests": remote_c.requests,
                                "lowest_prada_statistic": min(stats) if stats else None}

            view = admin.get("/v1/admin/alerts").json()
        finally:
            stop_server(proc)
    result["prada"] = {"delta": view["delta"], "alerts": [{k: a[k] for k in ("name", "statistic", "distances", "queries")}
                                                         for a in view["alerts"]],
                       "tokens": {t["name"]: {k: t[k] for k in ("queries", "flagged", "statistic", "distances")}
                                  for t in view["tokens"]}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["prada"], indent=2))
    verdicts = result["prada"]["tokens"]
    ok = verdicts["substitute"]["flagged"] and not verdicts["benign"]["flagged"]
    print("OK: the substitute attacker is flagged, the ordinary client is not" if ok else "FAILED: PRADA verdicts")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""HttpOracle against the real server: same answers as the model, black-box attacks unchanged, budgets and retries."""

from __future__ import annotations

import httpx
import pytest
import torch
from _serve import TOKENS, auth, free_port

from gibbon import zoo
from gibbon.attacks import FGSM, hopskipjump, square
from gibbon.core.norms import L2
from gibbon.oracles import GradientRefusedError, HttpOracle, Oracle, QueryBudgetExceeded, ServerBudgetExhausted
from gibbon.oracles.http import ServerError
from gibbon.transfer import substitute_attack


def usage(server, name) -> int:
    return httpx.get(f"{server.url}/v1/usage", headers=auth(name)).json()["queries"]


def test_http_oracle_answers_like_the_model(server, digits_sets, local_model):
    x = digits_sets[1].x[:100]
    with HttpOracle(server.url, TOKENS["user"][0], batch_size=30) as remote:
        before = usage(server, "user")
        probs = remote(x)
        assert remote.total == 100 and remote.requests == 4  # 30 + 30 + 30 + 10 rows
        assert usage(server, "user") - before == 100
        with torch.no_grad():
            assert torch.allclose(probs, local_model(x).softmax(1), atol=1e-5)
        assert remote(x[:0]).shape == (0, 10)
        with pytest.raises(GradientRefusedError):
            remote(x[:1].clone().requires_grad_(True))
    labels = HttpOracle(server.url, TOKENS["user"][0], output="label")(x[:5])
    assert labels.dtype == torch.int64 and labels.tolist() == probs[:5].argmax(1).tolist()


def test_hopskipjump_runs_unchanged_over_http(server, digits_sets, local_model):
    _, test = digits_sets
    with torch.no_grad():
        ok = local_model(test.x[:20]).argmax(1) == test.y[:20]
    x, y = test.x[:20][ok][:4], test.y[:20][ok][:4]
    remote = HttpOracle(server.url, TOKENS["user"][0])
    before = usage(server, "user")
    oracle = Oracle(remote, output="label")
    x_adv = hopskipjump(oracle, x, y, max_queries=400, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled = local_model(x_adv).argmax(1) != y
    dist = L2.distance(x_adv - x)
    assert int(fooled.sum()) >= 3, f"HopSkipJump fooled {int(fooled.sum())} of 4 over HTTP"
    assert float(dist[fooled].median()) < 3.0, f"median L2 {float(dist[fooled].median()):.3f}"  # noise starts at ~4.5
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert oracle.total == remote.total == usage(server, "user") - before
    assert remote.total <= 4 * 400


def test_substitute_attack_runs_unchanged_over_http(server, digits_sets):
    train, test = digits_sets
    remote = HttpOracle(server.url, TOKENS["user"][0], output="label")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sub = zoo.build("mlp-200-200", train)
    result = substitute_attack(remote, test.x[:30], sub, test.x[100:200], test.y[100:200], FGSM(), eps=0.3,
                               rounds=2, epochs=5)
    assert result.queries == 30 * 4 == result.training_points  # 30 seeds, doubled twice
    assert result.queries + result.attack_queries == remote.total
    assert result.oracle_accuracy >= 0.9 and result.transfer_success > 0.2, result.to_dict()


def test_budget_exhaustion_is_clean_on_the_client(server, digits_sets):
    x = digits_sets[1].x
    remote = HttpOracle(server.url, TOKENS["client-budget"][0], batch_size=8)
    with pytest.raises(ServerBudgetExhausted, match="left"):
        remote(x[:25])  # 8 rows answered, then 8 more than the 2 the server said were left
    assert remote.total == 8 and remote.remaining == 2 and remote.requests == 1
    other = HttpOracle(server.url, TOKENS["client-budget"][0], batch_size=8)  # does not know the budget yet
    with pytest.raises(QueryBudgetExceeded, match="spent"):
        other(x[:8])
    assert other.retried == 0  # a 403 is never retried
    assert other(x[:2]).shape == (2, 10) and other.remaining == 0
    assert remote.usage()["queries"] == 10


def test_attacks_stop_cleanly_at_the_servers_budget(server, digits_sets):
    """The token's budget (300) is the Oracle's shared budget: Square spends it and stops, with
    no ServerBudgetExhausted; the budget is learnt from GET /v1/usage before the first query."""
    x, y = digits_sets[1].x[:20], digits_sets[1].y[:20]
    remote = HttpOracle(server.url, TOKENS["shared"][0], batch_size=64)
    oracle = Oracle(remote)
    assert oracle.total_remaining() == 300 and remote.total == 0
    x_adv = square(oracle, x, y, eps=0.02, max_queries=1000, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape
    assert 300 - 20 < remote.total <= 300 and oracle.total == remote.total == usage(server, "shared")
    assert oracle.total_remaining() == 300 - remote.total

    labels = HttpOracle(server.url, TOKENS["shared-sub"][0], output="label")  # budget 200
    sub = zoo.build("mlp-200-200", digits_sets[0])
    result = substitute_attack(labels, x[:16].clone(), sub, digits_sets[1].x[100:150], digits_sets[1].y[100:150],
                               FGSM(), eps=0.3, rounds=5, epochs=2)
    # 100 labels kept back to score 50 images twice; training: 16 seeds + 16 + 32 + 36 (cut short)
    assert result.stopped_by_budget and result.queries == result.training_points == 100
    assert result.attack_queries == 100 and usage(server, "shared-sub") == 200


def test_an_estimated_attack_evaluation_stops_cleanly_at_the_tokens_budget(server, digits_sets):
    """evaluate() with NES-estimated PGD through the API: the token's 6,000 queries are the shared
    budget, learnt from the server; no ServerBudgetExhausted, and the report says it ran out."""
    from gibbon.evaluation import evaluate
    from gibbon.oracles import EstimatedGradient

    x, y = digits_sets[1].x[:40], digits_sets[1].y[:40]
    remote = HttpOracle(server.url, TOKENS["shared-nes"][0])
    oracle = Oracle(remote)
    report = evaluate(EstimatedGradient(oracle, samples=20), (x, y), ["pgd:steps=20,step_size=0.05"], [0.3],
                      batch_size=20, progress=False)
    assert oracle.total == remote.total == usage(server, "shared-nes") <= 6000
    assert 6000 - oracle.total < 20 * 22 + 40  # spent all but about one step of a batch
    assert any("shared query budget limited attack pgd" in w for w in report.warnings), report.warnings
    # measured: clean 1.0 -> 0.35 with 5,980 of the 6,000 queries; a no-op keeps 1.0
    assert report.robust_accuracy("pgd", 0.3) <= report.clean_accuracy - 0.3, report.table()


def test_evaluate_runs_square_over_http_to_the_tokens_budget_and_keeps_its_work(server, digits_sets):
    """Square wraps the evaluation's model in an oracle of its own; it must still see the token's
    budget through it. When it did not, the server's budget refused its last call and evaluate
    dropped every batch as unattacked (robust accuracy = clean)."""
    from gibbon.evaluation import evaluate

    x, y = digits_sets[1].x[:40], digits_sets[1].y[:40]
    remote = HttpOracle(server.url, TOKENS["shared-square"][0])
    oracle = Oracle(remote)
    report = evaluate(oracle, (x, y), ["square:max_queries=500"], [0.2], batch_size=20, progress=False)
    assert oracle.total == remote.total == usage(server, "shared-square") <= 1500
    assert 1500 - oracle.total <= 20, report.table()
    (warning,) = [w for w in report.warnings if "shared query budget limited attack square" in w]
    assert " 0 were not attacked" in warning
    # measured: clean 1.0 -> 0.15 with all 1,500 queries spent (before the fix: 1.0, "40 were not attacked")
    assert report.robust_accuracy("square", 0.2) <= report.clean_accuracy - 0.3, report.table()


def test_429_is_retried_after_the_servers_delay(server, digits_sets):
    remote = HttpOracle(server.url, TOKENS["slow2"][0], batch_size=2)
    out = remote(digits_sets[1].x[:4])  # burst 2 then 2 rows at 2 queries/s: one 429, then Retry-After
    assert out.shape == (4, 10) and remote.retried >= 1 and remote.total == 4


class _LosesFirstAnswer(httpx.HTTPTransport):
    """Delivers every request, but the first predict answer is lost on the way back (a timeout)."""

    def __init__(self):
        super().__init__()
        self.lost, self.keys = 0, []

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.url.path == "/v1/predict":
            self.keys.append(request.headers.get("idempotency-key"))
            if not self.lost:
                self.lost += 1
                response.read()
                raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_a_retry_after_a_lost_answer_is_charged_once(server, digits_sets, local_model):
    x = digits_sets[1].x[:6]
    transport = _LosesFirstAnswer()
    remote = HttpOracle(server.url, TOKENS["retry"][0], backoff=0.0,
                        client=httpx.Client(base_url=server.url, transport=transport, timeout=30))
    before = usage(server, "retry")
    probs = remote(x)
    assert transport.lost == 1 and remote.retried == 1 and len(transport.keys) == 2
    assert transport.keys[0] == transport.keys[1] and len(transport.keys[0]) == 32  # the retry reuses the key
    assert usage(server, "retry") - before == 6  # the server answered twice, charged once
    with torch.no_grad():
        assert torch.allclose(probs, local_model(x).softmax(1), atol=1e-5)
    remote(x)  # the same batch under a new key is a new query
    assert usage(server, "retry") - before == 12


def test_unreachable_server_fails_after_the_retries():
    with pytest.raises(ServerError, match="unreachable after 3 attempts"):
        HttpOracle(f"http://127.0.0.1:{free_port()}", "x" * 20, retries=2, backoff=0.01)

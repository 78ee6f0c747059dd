"""``gibbon serve``: a saved gibbon model behind the prediction API (uvicorn, one process).

FastAPI and uvicorn are imported inside the command, so ``gibbon --help`` works without the
``serve`` extra (``pip install 'gibbon[serve]'``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Optional

import typer

from gibbon.core.checks import GibbonInputError

INSTALL_HINT = "pip install 'gibbon[serve]'"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token_store(tokens_file: Optional[Path], defaults: dict):
    """Tokens from ``--tokens-file``, else ``GIBBON_TOKENS``; there is no tokenless mode."""
    from gibbon.serve.tokens import TokenStore, load_tokens_file, tokens_from_env

    if tokens_file is not None:
        return TokenStore(load_tokens_file(tokens_file))
    env = os.environ.get("GIBBON_TOKENS", "")
    if not env.strip():
        raise GibbonInputError("gibbon serve needs tokens: pass --tokens-file tokens.yaml or set "
                               "GIBBON_TOKENS=token1,token2 (each at least 16 characters)")
    return TokenStore(tokens_from_env(env, defaults))


def check_options(output: str, topk: int, decimals: Optional[int], max_batch: int, max_body_bytes: int,
                  threads: int, port: int, prada_delta: float = 0.94, prada_min: int = 100,
                  auth_failures: int = 100, auth_failure_rate: float = 1.0) -> None:
    from gibbon.serve.state import OUTPUTS

    if output not in OUTPUTS:
        raise GibbonInputError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if topk < 1 or max_batch < 1 or max_body_bytes < 1024 or threads < 1:
        raise GibbonInputError("--topk, --max-batch and --threads must be >= 1 and --max-body-bytes >= 1024")
    if decimals is not None and not 0 <= decimals <= 12:
        raise GibbonInputError(f"--round takes 0 to 12 digits, got {decimals}")
    if not 0 <= port <= 65535:
        raise GibbonInputError(f"--port must be 0-65535, got {port}")
    if not 0 < prada_delta < 1 or prada_min < 3:
        raise GibbonInputError("--prada-delta must be in (0, 1) and --prada-min-distances >= 3")
    if auth_failures < 1 or not auth_failure_rate > 0:
        raise GibbonInputError("--auth-failures must be >= 1 and --auth-failure-rate > 0")


def serve(
    model: str = typer.Option(..., "--model", help="A saved gibbon model (PATH.safetensors with its .json card)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    tokens_file: Optional[Path] = typer.Option(None, "--tokens-file",
                                               help="YAML/JSON tokens with budgets, rates, admin flags."),
    output: str = typer.Option("probs", "--output", help="What clients get: label, probs or topk."),
    topk: int = typer.Option(3, "--topk", help="Classes per input with --output topk."),
    decimals: Optional[int] = typer.Option(None, "--round", help="Round probabilities to this many digits."),
    mad_eps: Optional[float] = typer.Option(None, "--mad-eps", help="Prediction poisoning against model theft "
                                            "(MAD-argmax, Orekondy et al. 2020): move each answer's probabilities by "
                                            "this L1 distance (0-2), top-1 label kept (docs/extraction.md)."),
    mad_surrogate: Optional[str] = typer.Option(None, "--mad-surrogate", help="The defender's stand-in for the "
                                                "thief's model (an architecture; default: the served one's)."),
    log_dir: Path = typer.Option(Path("serve-logs"), "--log-dir", help="Query logs (budgets survive restarts)."),
    log_inputs: bool = typer.Option(False, "--log-inputs", help="Also log the raw inputs (float32, base64)."),
    max_batch: int = typer.Option(256, "--max-batch", help="Most inputs per request (413 above)."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, "--max-body-bytes", help="Largest request body (413)."),
    budget: int = typer.Option(100_000, "--default-budget", help="Budget of GIBBON_TOKENS tokens (queries)."),
    rate: float = typer.Option(100.0, "--default-rate", help="Rate of GIBBON_TOKENS tokens (queries/s)."),
    burst: int = typer.Option(500, "--default-burst", help="Burst of GIBBON_TOKENS tokens (queries)."),
    prada_delta: float = typer.Option(0.94, "--prada-delta", help="PRADA alert when Shapiro-Wilk W < this."),
    prada_min: int = typer.Option(100, "--prada-min-distances", help="PRADA tests once this many distances."),
    auth_failures: int = typer.Option(100, "--auth-failures",
                                      help="Failed logins one client address may make before it gets 429s."),
    auth_failure_rate: float = typer.Option(1.0, "--auth-failure-rate",
                                            help="... then this many more per second."),
    threads: int = typer.Option(1, "--threads", help="torch threads per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ..."),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="Serve HTTPS with this certificate."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="... and this private key."),
    access_log: bool = typer.Option(False, "--access-log", help="uvicorn's access log (never shows tokens)."),
    forwarded_allow_ips: Optional[str] = typer.Option(
        None, "--forwarded-allow-ips", help="Proxies (comma-separated IPs, or *) whose X-Forwarded-For is trusted "
        "as the client address. Off by default: a header any client can set must not pick whom the login "
        "throttle counts."),
    max_connections: int = typer.Option(64, "--max-connections", help="Open connections at most (503 above)."),
    max_parallel: int = typer.Option(4, "--max-parallel", help="Requests reading, parsing and predicting at once; "
                                     "the rest wait unread (bounds memory to about this many bodies)."),
    head_timeout: float = typer.Option(10.0, "--head-timeout", help="Seconds a client has to send a request's "
                                       "line and headers (slowloris); the connection is closed after."),
    body_timeout: float = typer.Option(30.0, "--body-timeout", help="Seconds a client has to send a whole body "
                                       "once its headers are in (408 after)."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Let a model card that names a factory "
                                    "(pkg.module:function) import and run it; only for cards you wrote or trust."),
) -> None:
    """Serve a model as a prediction API with tokens, budgets, rate limits and PRADA extraction alerts."""
    try:
        import uvicorn

        from gibbon.serve.app import create_app
        from gibbon.serve.protocol import head_timeout_protocol
    except ImportError as e:
        raise GibbonInputError(f"gibbon serve needs {e.name}; {INSTALL_HINT}") from None
    import torch

    from gibbon import zoo
    from gibbon.serve.state import Deployment, Settings

    check_options(output, topk, decimals, max_batch, max_body_bytes, threads, port, prada_delta, prada_min,
                  auth_failures, auth_failure_rate)
    if max_connections < 1 or max_parallel < 1:
        raise GibbonInputError("--max-connections and --max-parallel must be >= 1")
    if not (head_timeout > 0 and body_timeout > 0):
        raise GibbonInputError("--head-timeout and --body-timeout must be > 0 seconds")
    if mad_eps is not None and not 0 <= mad_eps <= 2:
        raise GibbonInputError(f"--mad-eps is an L1 distance between probability vectors: 0 to 2, got {mad_eps}")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise GibbonInputError("give both --ssl-certfile and --ssl-keyfile, or neither")
    store = load_token_store(tokens_file, {"budget": budget, "rate": rate, "burst": burst})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gibbon.serve")
    if tokens_file is not None and tokens_file.stat().st_mode & 0o077:
        log.warning("tokens file %s is readable by other users (mode %o): run chmod 600 %s", tokens_file,
                    tokens_file.stat().st_mode & 0o777, tokens_file)
    if not _loopback(host) and ssl_certfile is None:
        log.warning("binding %s without TLS: tokens cross the network in clear; use --ssl-certfile/--ssl-keyfile "
                    "or a TLS proxy", host)
    torch.set_num_threads(threads)
    net = zoo.load(model, device=device, trust_code=trust_code)
    card = zoo.io.read_card(model)
    if mad_eps is not None:
        from gibbon.extraction.prediction_poisoning import mad_served_model

        net = mad_served_model(net, card, mad_eps, surrogate_arch=mad_surrogate)
    settings = Settings(output=output, topk=topk, decimals=decimals, max_batch=max_batch,
                        max_body_bytes=max_body_bytes, log_inputs=log_inputs, prada_delta=prada_delta,
                        prada_min_distances=prada_min, auth_failures=auth_failures,
                        auth_failure_rate=auth_failure_rate)
    deployment = Deployment(net, card, store, log_dir, settings)
    log.info("serving %s (%s) on %s:%d for %d tokens; query logs in %s", model, card.get("architecture"), host, port,
             len(store.specs), log_dir)
    try:
        app = create_app(deployment, max_parallel=max_parallel, body_timeout=body_timeout)
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info",
                    ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                    ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
                    http=head_timeout_protocol(head_timeout), limit_concurrency=max_connections,
                    proxy_headers=forwarded_allow_ips is not None, forwarded_allow_ips=forwarded_allow_ips)
    finally:
        deployment.close()

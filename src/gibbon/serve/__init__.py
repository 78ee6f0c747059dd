"""A prediction API to attack and defend: a gibbon model served over HTTP as a real black box.

``gibbon serve --model M.safetensors --tokens-file tokens.yaml --port 8000`` runs a FastAPI app
under uvicorn (:mod:`gibbon.serve.app`) over a :class:`Deployment` (:mod:`gibbon.serve.state`):
bearer tokens stored as sha256 digests (:mod:`~gibbon.serve.tokens`), per-token query budgets
and token-bucket rate limits, strict input checks (:mod:`~gibbon.serve.payload`), an append-only
fsync'd query log per token that budgets and detector state are rebuilt from after a restart
(:mod:`~gibbon.serve.querylog`), and a PRADA monitor flagging extraction-style query streams
(Juuti et al. 2019, :mod:`~gibbon.serve.prada`). The client side is
:class:`gibbon.oracles.HttpOracle`. User guide: ``docs/serve.md``.

Needs the ``serve`` extra for the server: ``pip install 'gibbon[serve]'`` (fastapi, uvicorn,
httpx, pyyaml). Names are imported on first use, so ``gibbon --help`` loads neither torch nor them.
"""

import importlib

_LAZY = {
    "create_app": "app", "Deployment": "state", "Settings": "state", "Prada": "prada", "shapiro_w": "prada",
    "Rejected": "payload", "encode_binary": "payload", "parse_batch": "payload", "TokenSpec": "tokens",
    "TokenStore": "tokens", "load_tokens_file": "tokens", "tokens_from_env": "tokens",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"gibbon.serve.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gibbon.serve' has no attribute {name!r}")

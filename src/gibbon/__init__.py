"""gibbon: security of machine learning models.

Attacks (``gibbon.attacks``), threat models and losses (``gibbon.core``), data
(``gibbon.data``), the papers' model zoo (``gibbon.zoo``) and trustworthy robustness
evaluation (``gibbon.evaluation``; its main function is ``gibbon.evaluate``).
"""

from gibbon._version import __version__
from gibbon import attacks, core  # noqa: E402

__all__ = ["__version__", "attacks", "core", "evaluate"]


def __getattr__(name):
    # Lazy re-export: importing gibbon stays cheap and the evaluation package loads on first use.
    if name == "evaluate":
        from gibbon.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'gibbon' has no attribute {name!r}")

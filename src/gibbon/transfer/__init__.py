"""Transfer attacks: what an adversary does without the target's gradients.

* :func:`substitute_attack` / :func:`train_substitute`: Papernot et al. 2017's black-box attack,
  a local substitute trained by querying the oracle with Jacobian-based dataset augmentation.
* :class:`Ensemble` / :func:`ensemble_transfer`: Liu et al. 2017's ensemble transfer, examples
  crafted against several white-box models at once and sent to a held-out one.
* :func:`transfer_matrix`: transfer rates between any mix of networks and scikit-learn / ONNX
  techniques (Papernot, McDaniel & Goodfellow 2016), black-box sources through substitutes.
* :func:`adversarial_subspace`: Tramèr et al. 2017's gradient-aligned adversarial subspaces,
  the number of orthogonal adversarial directions and how many of them transfer.
"""

from gibbon.transfer.ensemble import Ensemble, TransferResult, ensemble_transfer
from gibbon.transfer.matrix import TransferMatrix, transfer_matrix
from gibbon.transfer.subspace import SubspaceResult, adversarial_subspace, aligned_directions
from gibbon.transfer.substitute import SubstituteResult, jacobian_augmentation, substitute_attack, train_substitute

__all__ = ["SubstituteResult", "jacobian_augmentation", "substitute_attack", "train_substitute",
           "Ensemble", "TransferResult", "ensemble_transfer", "TransferMatrix", "transfer_matrix",
           "SubspaceResult", "adversarial_subspace", "aligned_directions"]

"""Data sets as ready-to-attack tensors: ``load(name, split)`` returns a :class:`Dataset`.

Built-in names are in :data:`DATASETS` (``cifar10``, ``digits``, ``mnist``, ``synthetic``);
``"npz:PATH"`` loads a user's file. Inputs are float32 ``(N, C, H, W)`` in ``[0, 1]``,
labels int64. Data files are looked up in ``root=`` or the ``GIBBON_DATA`` directory.

Helper modules: :mod:`~gibbon.data.augment` (label-preserving shifts), :mod:`~gibbon.data.idx`
(IDX parser), :mod:`~gibbon.data.safe_pickle` (restricted unpickler),
:mod:`~gibbon.data.download` (checksummed download) and one module per data set.
"""

from gibbon.data import augment, cifar10, digits, download, idx, mnist, npz, safe_pickle, synthetic
from gibbon.data._common import SPLITS
from gibbon.data.dataset import Dataset
from gibbon.data.loading import DATASETS, load, load_at_most

__all__ = [
    "DATASETS", "SPLITS", "Dataset", "load", "load_at_most",
    "augment", "cifar10", "digits", "download", "idx", "mnist", "npz", "safe_pickle", "synthetic",
]

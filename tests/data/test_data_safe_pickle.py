"""The restricted unpickler admits numpy arrays and plain containers, and refuses every other global."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from gibbon.core.checks import GibbonInputError
from gibbon.data.safe_pickle import UnsafePickleError, load_arrays_pickle


class _Payload:
    """A custom class: its pickle names ``<this module>._Payload``."""


class _RunsCommand:
    def __reduce__(self):
        # a classic malicious pickle: calls os.system when loaded by plain pickle.load.
        # The command is harmless, and the restricted unpickler must refuse before calling it.
        return (os.system, ("true",))


@pytest.mark.parametrize("protocol", [3, 4])
def test_round_trip_arrays_and_containers(protocol):
    obj = {
        b"data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        b"labels": [1, 2, 3],
        "f": (np.full(2, 0.5, np.float32), 1.5, None),
    }
    out = load_arrays_pickle(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    assert np.array_equal(out[b"data"], obj[b"data"]) and out[b"data"].dtype == np.uint8
    assert out[b"labels"] == [1, 2, 3] and np.array_equal(out["f"][0], obj["f"][0])


def test_old_numpy_core_name_is_mapped():
    data = pickle.dumps(np.arange(5, dtype=np.int64), protocol=3)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data and b"numpy.core.multiarray" in old
    assert np.array_equal(load_arrays_pickle(io.BytesIO(old)), np.arange(5))


@pytest.mark.parametrize(
    "obj,name",
    [
        (os.system, f"{os.system.__module__}.system"),
        (_RunsCommand(), f"{os.system.__module__}.system"),
        (_Payload(), f"{__name__}._Payload"),
        ({"a": [np.zeros(2), eval]}, "builtins.eval"),
        (np.load, "numpy.load"),
    ],
)
def test_refuses_other_globals(obj, name):
    data = pickle.dumps(obj, protocol=4)  # building the pickle runs nothing
    with pytest.raises(UnsafePickleError) as e:
        load_arrays_pickle(io.BytesIO(data))
    msg = str(e.value)
    assert f"refusing to unpickle {name}" in msg and "may not be a plain array pickle" in msg
    assert isinstance(e.value, GibbonInputError) and isinstance(e.value, pickle.UnpicklingError)


def test_refuses_object_arrays_of_custom_objects():
    arr = np.array([_Payload(), 1], dtype=object)
    with pytest.raises(UnsafePickleError, match="_Payload"):
        load_arrays_pickle(io.BytesIO(pickle.dumps(arr, protocol=4)))

"""Every docstring Example in the package runs (the docs must not lie)."""

import doctest
import importlib
import pkgutil

import pytest

import gibbon

MODULES = sorted(info.name for info in pkgutil.walk_packages(gibbon.__path__, "gibbon."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"

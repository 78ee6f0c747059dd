import pytest

from gibbon import data


@pytest.fixture(scope="session")
def digits_sets():
    """scikit-learn's digits: the train and test splits."""
    return data.load("digits", "train"), data.load("digits", "test")

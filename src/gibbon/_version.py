"""gibbon's version, in the bottom layer so that model cards and cache keys read it without
importing the package's ``__init__`` (which loads attacks and evaluation)."""

__version__ = "0.1.0"

"""fragment-connector: keeps a Fragment backlog equal to a back-office's open tickets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fragment-connector")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]

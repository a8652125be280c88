"""fragment-connector: keeps a Fragment backlog equal to a back-office's open tickets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fragment-connector")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def _check_adapters_package() -> None:
    """Refuse to run with another distribution's `adapters` package in place of ours.

    The adapter SDK's import name is generic, and an unrelated distribution may install a
    top-level `adapters` too: if it comes first on the path, every `import adapters.base` would
    fail deep inside, or worse, load someone else's module. Ours is always next to `connector`.
    Finding a spec imports nothing, so this costs a few path lookups.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("adapters")
    ours = Path(__file__).resolve().parent.parent / "adapters"
    found = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    if ours.is_dir() and ours not in found:
        where = ", ".join(map(str, found)) or (spec.origin if spec else None) or "nowhere"
        raise ImportError(
            f"the `adapters` package found first ({where}) is not fragment-connector's "
            f"({ours}): another distribution installs a top-level `adapters` (see `pip show -f "
            "<name>`; docs/adapters.md, 'The adapters name'); uninstall it or use another "
            "environment"
        )


_check_adapters_package()

__all__ = ["__version__"]

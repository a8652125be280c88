"""An embedded fake of the Fragment REST API, served over a real socket.

Used by `fragment-connector demo`, by `fragment.base_url: sandbox`, by the `sandbox` command, by
every test and by benchmarks. It implements fragment-api.md independently of our client
(`connector.fragment`), adds test-mode fault knobs and an admin API under `/_sandbox`, and imports
nothing from the rest of `connector`.
"""

from connector.sandbox.app import create_app
from connector.sandbox.config import SandboxConfig
from connector.sandbox.faults import FailRule, Faults
from connector.sandbox.server import SandboxServer, serve
from connector.sandbox.store import SandboxStore

__all__ = [
    "FailRule",
    "Faults",
    "SandboxConfig",
    "SandboxServer",
    "SandboxStore",
    "create_app",
    "serve",
]

"""The kit's own tests use the example plug-ins (examples/adapter-plugin, capped-search-plugin),
installed or not."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
for example in ("adapter-plugin", "capped-search-plugin"):
    if str(EXAMPLES / example / "src") not in sys.path:
        sys.path.insert(0, str(EXAMPLES / example / "src"))

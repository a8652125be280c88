"""The kit's own tests use the example plug-in (examples/adapter-plugin), installed or not."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adapter-plugin" / "src"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

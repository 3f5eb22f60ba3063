"""Small file readers shared by the runtime and the library (the artifacts manifest, the tri-plane store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from humanliff.runtime.errors import InputFileError


def read_json(path: Path) -> Any:
    """Parse a JSON file; one-line ``InputFileError`` naming it when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"not valid JSON ({exc.__class__.__name__})") from exc

"""The JSON Schema of policy files, shipped in the wheel and kept in ``schemas/`` of the repo."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_NAME = "policy.schema.json"


def schema_path() -> Path:
    """The schema file: the copy inside the installed package, else the repository's (an
    editable install or a source checkout, where ``schemas/`` is the source)."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / SCHEMA_NAME
    if packaged.is_file():
        return packaged
    return package.parent / "schemas" / SCHEMA_NAME


def schema_text() -> str:
    """The schema as text."""
    return schema_path().read_text(encoding="utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed policy schema (JSON Schema 2020-12)."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded

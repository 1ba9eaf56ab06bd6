"""The JSON Schema of policy files, shipped in the wheel and kept in ``schemas/`` of the repo."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_NAME = "policy.schema.json"


def schema_text() -> str:
    """The schema as text: the copy inside the installed package, else the repository's."""
    packaged = resources.files("policycompile").joinpath(SCHEMA_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # An editable install or a source checkout: the repository's schemas/ is the source.
    return (Path(__file__).resolve().parent.parent / "schemas" / SCHEMA_NAME).read_text(
        encoding="utf-8"
    )


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed policy schema (JSON Schema 2020-12)."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded

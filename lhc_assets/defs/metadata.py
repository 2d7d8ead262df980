"""Materialization metadata shared by the stages: inline figures and markdown tables for the Dagster UI."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from dagster import MetadataValue


def png_markdown(png: bytes, alt: str) -> MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown metadata with a data URI)."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> MetadataValue:
    """A markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))

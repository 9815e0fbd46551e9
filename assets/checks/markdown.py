"""Markdown tables for check and asset metadata (`MetadataValue.md`), rendered by the Dagster UI."""

from collections.abc import Iterable, Sequence


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, text_columns: int = 1) -> str:
    """`rows` under a header of `columns`; the first `text_columns` columns left-aligned, the rest
    (numbers) right-aligned. Cells are written as given: format numbers before passing them."""
    align = ["---"] * text_columns + ["---:"] * (len(columns) - text_columns)
    lines = [columns, align, *([str(cell) for cell in row] for row in rows)]
    return "\n".join(f"| {' | '.join(line)} |" for line in lines)

"""Metadata tables: header, alignment and cells as the Dagster UI's Markdown renderer reads them."""

from assets.checks.markdown import markdown_table


def test_text_columns_are_left_aligned_and_numbers_right_aligned():
    row = ["modality=CT", "sensitivity", 31]
    table = markdown_table(["subgroup", "rate", "cases"], [row], text_columns=2)
    assert table.splitlines() == [
        "| subgroup | rate | cases |",
        "| --- | --- | ---: |",
        "| modality=CT | sensitivity | 31 |",
    ]


def test_a_table_without_rows_is_still_a_table():
    assert markdown_table(["item", "excess"], []).splitlines() == ["| item | excess |", "| --- | ---: |"]

"""Rows of an ``.xlsx`` workbook's first sheet as text cells, for the win/loss import.

A spreadsheet holds typed cells: a date becomes ISO 8601 (a date alone when it has no time),
a whole number its digits (``12000``, not ``12000.0``), an empty cell ``""``. Everything then
goes through the same checks as a CSV's cells (bot.services.csvio.read_records).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time


def cell_text(value: object) -> str:
    """One cell as the text a CSV export would have held."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def rows(path: str) -> Iterator[list[str]]:
    """The first sheet's rows, the header first; blank trailing rows are skipped by the
    reader like blank CSV lines."""
    # Imported here, not at the top: openpyxl is only needed for .xlsx, and every closeloop
    # command (the bot itself too) imports the CLI module that calls this.
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield [cell_text(value) for value in values]
    finally:
        book.close()

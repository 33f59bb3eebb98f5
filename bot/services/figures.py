"""The arithmetic every report shares (the monthly digest, its lead section, the Monday
report): a rate, an amount as text, hours between two columns and a median, in SQL that runs
the same on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` from 0 to 1; None when there is nothing to divide."""
    return None if not whole else part / whole


def money(value) -> str | None:
    """An amount as text with two decimals (``"12500.00"``); None stays None."""
    return None if value is None else str(Decimal(value).quantize(Decimal("0.01")))


def hours_between(session: Session, start, end):
    """SQL for the hours from ``start`` to ``end`` on SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 24.0
    return func.extract("epoch", end - start) / 3600.0


def median(session: Session, values: Select) -> float | None:
    """The median of a one-column select, with ORDER BY/LIMIT/OFFSET (portable SQL)."""
    sub = values.subquery()
    column = sub.c[0]
    n = session.scalar(select(func.count()).select_from(sub).where(column.is_not(None))) or 0
    if n == 0:
        return None
    middle = session.scalars(
        select(column)
        .where(column.is_not(None))
        .order_by(column)
        .offset((n - 1) // 2)
        .limit(1 if n % 2 else 2)
    ).all()
    return float(sum(middle)) / len(middle)

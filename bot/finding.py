"""One finding of ``closeloop check`` (bot.checks, bot.checks_crm): its level and its line."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "closeloop check: "
OK, WARNING, PROBLEM = "ok", "warning", "problem"


@dataclass(frozen=True)
class Finding:
    level: str  # OK, WARNING or PROBLEM
    text: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.level}: {self.text}"

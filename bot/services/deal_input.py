"""What arrives for the win/loss log: a closed deal's fields (the deal webhook, the CRMs, the
CLI, an import) and an entry's times and amounts, parsed and checked; :class:`InvalidField`
names the first bad field. No database here (bot.services.winloss stores)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from bot.models import FORGOTTEN_PREFIX, Outcome
from bot.services.errors import DomainError


class InvalidField(DomainError):
    """A field of an incoming deal or entry is missing or malformed."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class OutOfRange(InvalidField):
    """A time that exists in its own offset but not in UTC (year 1 east of Greenwich)."""


# --- parsing ------------------------------------------------------------------------------


_OUTCOMES = frozenset(Outcome)


def parse_outcome(value: object, field_name: str = "outcome") -> str:
    """``won``, ``lost`` or ``no_decision`` from any case and spelling ("No decision")."""
    if isinstance(value, str) and value in _OUTCOMES:  # as export writes it
        return value
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(field_name, "is required (won, lost or no_decision)")
    key = re.sub(r"[\s\-_]+", "_", value.strip().casefold())
    if key not in tuple(Outcome):
        raise InvalidField(field_name, f"must be won, lost or no_decision, not {value!r}")
    return key


def parse_instant(value: object, field_name: str) -> tuple[datetime, bool]:
    """An ISO 8601 time (UTC when it has no offset); a bare date is allowed.

    Returns the instant and whether only a date was given.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(field_name, "is required (ISO 8601, e.g. 2026-11-20T15:30:00Z)")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC), True
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidField(
            field_name, f"is not an ISO 8601 time: {value!r} (e.g. 2026-11-20T15:30:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC), False
    except OverflowError:  # 0001-01-01T00:00:00+05:00 is before the first representable UTC
        raise OutOfRange(field_name, f"{value!r} is out of range") from None


EARLIEST_CLOSE = date(2000, 1, 1)
LATEST_CLOSE_AHEAD = timedelta(days=365)


def close_date_problem(closed_on: date, *, today: date) -> str | None:
    """Why a deal cannot have closed on ``closed_on``, or None: the one range every way in
    (the /winloss modal, the deal webhook, ``closeloop deal-closed``) accepts. Before 2000 is
    a typo (and year 1 is no instant in every time zone); more than a year ahead is too."""
    if closed_on < EARLIEST_CLOSE:
        return f"The close date cannot be before {EARLIEST_CLOSE:%Y}."
    if closed_on > today + LATEST_CLOSE_AHEAD:
        return "The close date cannot be more than a year ahead."
    return None


def parse_closed_at(
    value: object, *, now: datetime, field_name: str = "closed_at"
) -> tuple[datetime, bool]:
    """:func:`parse_instant` for a deal's close, within :func:`close_date_problem`'s range."""
    try:
        closed_at, date_only = parse_instant(value, field_name)
    except OutOfRange:
        raise InvalidField(
            field_name, f"must be from {EARLIEST_CLOSE} to a year from now, not {value!r}"
        ) from None
    problem = close_date_problem(closed_at.date(), today=now.astimezone(UTC).date())
    if problem:
        raise InvalidField(field_name, f"{problem} ({value!r})")
    return closed_at, date_only


def parse_amount(value: object, field_name: str = "amount") -> Decimal | None:
    """An optional non-negative amount ("12500", 12500.5, "12,500.00")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidField(field_name, "must be a number")
    try:
        amount = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation:
        raise InvalidField(field_name, f"must be a number, not {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal("1e12"):
        raise InvalidField(field_name, "must be a positive number below 1,000,000,000,000")
    return amount.quantize(Decimal("0.01"))


def _text(value: object, field_name: str, *, required: bool, limit: int) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidField(field_name, "is required")
        return None
    if not isinstance(value, str | int):
        raise InvalidField(field_name, "must be a string")
    text = str(value).strip()
    if len(text) > limit:
        raise InvalidField(field_name, f"must be at most {limit} characters")
    return text


_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PSEUDONYM = re.compile(rf"^{FORGOTTEN_PREFIX}[0-9a-f]{{1,22}}$")


@dataclass(frozen=True)
class DealIn:
    """A closed deal as the CRM (webhook, CLI, import) describes it."""

    external_id: str
    name: str
    outcome: str
    closed_at: datetime
    owner_user_id: str | None = None
    owner_email: str | None = None
    amount: Decimal | None = None
    source: str | None = None
    closed_on_date_only: bool = False
    crm_reason: str | None = None  # the CRM's own lost/won reason, shown beside the rep's


def parse_owner(value: object, field_name: str = "owner") -> tuple[str | None, str | None]:
    """(Slack user ID, email) from one owner value."""
    text = _text(value, field_name, required=True, limit=255)
    assert text is not None
    if _USER_ID.match(text) or _PSEUDONYM.match(text):  # an export of a forgotten owner
        return text, None
    if _EMAIL.match(text):
        return None, text.lower()
    raise InvalidField(field_name, f"must be a Slack user ID (U...) or an email, not {text!r}")


def parse_deal(data: Mapping[str, object], *, now: datetime) -> DealIn:
    """Validate the deal webhook's JSON object; InvalidField names the first bad field."""
    if not isinstance(data, Mapping):
        raise InvalidField("body", "must be a JSON object")
    nul = field_with_nul(data)
    if nul is not None:
        raise InvalidField(nul, "contains a NUL character (\\u0000)")
    external_id = _text(data.get("deal_id"), "deal_id", required=True, limit=120)
    name = _text(data.get("name"), "name", required=True, limit=255)
    outcome = parse_outcome(data.get("outcome"))
    closed_at, date_only = parse_closed_at(data.get("closed_at"), now=now)
    slack_id = _text(data.get("owner_slack_id"), "owner_slack_id", required=False, limit=32)
    email = _text(data.get("owner_email"), "owner_email", required=False, limit=255)
    if slack_id is None and email is None:
        raise InvalidField("owner_email", "or owner_slack_id is required")
    if slack_id is not None and not _USER_ID.match(slack_id):
        raise InvalidField("owner_slack_id", f"must be a Slack user ID (U...), not {slack_id!r}")
    if email is not None and not _EMAIL.match(email):
        raise InvalidField("owner_email", f"is not an email address: {email!r}")
    source = data.get("source")
    if source is None:
        source = data.get("campaign")
    return DealIn(
        external_id=str(external_id),
        name=str(name),
        outcome=outcome,
        closed_at=closed_at,
        owner_user_id=slack_id,
        owner_email=email.lower() if email else None,
        amount=parse_amount(data.get("amount")),
        source=_text(source, "source", required=False, limit=255),
        closed_on_date_only=date_only,
        crm_reason=_text(data.get("crm_reason"), "crm_reason", required=False, limit=1000),
    )


def field_with_nul(data: Mapping[str, object]) -> str | None:
    """The first top-level field of ``data`` holding a NUL character in any string inside it
    (a key or a value, however deep): PostgreSQL's text cannot store one."""
    for key, value in data.items():
        stack: list[object] = [key, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if "\x00" in item:
                    return key.replace("\x00", "") or "body"
            elif isinstance(item, Mapping):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def deadline_for(closed_at: datetime, *, date_only: bool, hours: int) -> datetime:
    """When the entry is due: ``hours`` after close; a date-only close counts from its end."""
    return closed_at + timedelta(hours=hours) + (timedelta(days=1) if date_only else timedelta())

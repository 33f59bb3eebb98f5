"""The lead hand-off loop's settings (``Settings.leads``): the SLA, the rejection taxonomy,
the Monday report, the definition's owners and review. All have defaults: the loop runs
as soon as leads arrive."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

from bot.config_values import (
    DAYS,
    ConfigError,
    WeeklyTime,
    channel_setting,
    hours,
    optional_user_ids,
    parse_weekly_time,
    timezone_setting,
    whole,
)

# The playbook's six reasons a lead is sent back: short on purpose (reps ignore long menus).
DEFAULT_REJECT_REASONS = (
    "Bad fit: company size",
    "Bad fit: no budget",
    "Not ready: needs nurture",
    "Bad data",
    "Competitor's customer",
    "Duplicate",
)
MAX_REJECT_REASONS = 7
RATING_CHANGE_DAYS = 7  # a rep may change a rating this long after making it


@dataclass(frozen=True)
class WorkingHours:
    """The hours an SLA counts in (each owner's own time zone): ``mon-fri 09:00-17:00``."""

    days: frozenset[int]  # Monday == 0
    start: time
    end: time

    def __str__(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class LeadSettings:
    """Everything the lead loop reads from the environment (LEAD_*, DEFINITION_*)."""

    sla_hours: int = 24  # LEAD_SLA_HOURS: the owner rates the lead within this
    reminder_hours: int = 18  # LEAD_REMINDER_HOURS: the owner reminded this long after
    working_hours: WorkingHours | None = None  # LEAD_SLA_WORKING_HOURS: hours counted in
    escalation_channel: str = ""  # LEAD_ESCALATION_CHANNEL: defaults to WINLOSS_ESCALATION_
    sales_channel: str = ""  # LEAD_SALES_CHANNEL: told of a new definition (escalation's)
    report_channel: str = ""  # LEAD_REPORT_CHANNEL: defaults to FEEDBACK_CHANNEL
    report_schedule: WeeklyTime = WeeklyTime(0, time(9, 0))  # LEAD_REPORT_SCHEDULE
    report_timezone: str = "UTC"  # LEAD_REPORT_TIMEZONE: defaults to DIGEST_TIMEZONE
    rejection_alert: float = 0.30  # LEAD_REJECTION_ALERT: a source above it is flagged
    min_sample: int = 10  # LEAD_MIN_SAMPLE: fewer leads than this: no flag, no percentage
    reject_reasons: tuple[str, ...] = DEFAULT_REJECT_REASONS  # LEAD_REJECT_REASONS
    definition_owners: tuple[str, ...] = ()  # DEFINITION_OWNERS: asked to review it
    review_months: int = 3  # DEFINITION_REVIEW_MONTHS: how often they are asked


def lead_settings(get, *, digest_timezone: str) -> LeadSettings:
    """Read the lead loop's settings; raise ConfigError with a line per problem."""
    problems: list[str] = []

    def take(parse, *args, default=None):
        try:
            return parse(*args)
        except ConfigError as err:
            problems.extend(err.lines)
            return default

    sla = take(hours, get, "LEAD_SLA_HOURS", 24, default=24)
    if sla < 2:
        problems.append("LEAD_SLA_HOURS must be at least 2 (a reminder comes first)")
        sla = 24
    reminder = take(hours, get, "LEAD_REMINDER_HOURS", max(1, sla * 3 // 4), default=sla - 1)
    if reminder >= sla:
        problems.append(f"LEAD_REMINDER_HOURS={reminder} must be less than LEAD_SLA_HOURS={sla}")
    working = take(_working_hours, get("LEAD_SLA_WORKING_HOURS"))
    alert = take(_share, "LEAD_REJECTION_ALERT", get("LEAD_REJECTION_ALERT") or "30%", default=0.3)
    min_sample = take(
        whole,
        "LEAD_MIN_SAMPLE",
        get("LEAD_MIN_SAMPLE") or "10",
        1,
        1000,
        "must be a whole number, 1 to 1000",
        default=10,
    )
    review_months = take(
        whole,
        "DEFINITION_REVIEW_MONTHS",
        get("DEFINITION_REVIEW_MONTHS") or "3",
        1,
        12,
        "must be a whole number of months, 1 to 12",
        default=3,
    )
    schedule = take(
        parse_weekly_time,
        "LEAD_REPORT_SCHEDULE",
        get("LEAD_REPORT_SCHEDULE") or "mon 09:00",
        default=WeeklyTime(0, time(9, 0)),
    )
    report_tz = take(
        timezone_setting,
        "LEAD_REPORT_TIMEZONE",
        get("LEAD_REPORT_TIMEZONE") or digest_timezone,
        default="UTC",
    )
    found = LeadSettings(
        sla_hours=sla,
        reminder_hours=reminder,
        working_hours=working,
        escalation_channel=take(channel_setting, get, "LEAD_ESCALATION_CHANNEL") or "",
        sales_channel=take(channel_setting, get, "LEAD_SALES_CHANNEL") or "",
        report_channel=take(channel_setting, get, "LEAD_REPORT_CHANNEL") or "",
        report_schedule=schedule,
        report_timezone=report_tz,
        rejection_alert=alert,
        min_sample=min_sample,
        reject_reasons=take(_reasons, get("LEAD_REJECT_REASONS"), default=DEFAULT_REJECT_REASONS),
        definition_owners=take(optional_user_ids, get, "DEFINITION_OWNERS", default=()),
        review_months=review_months,
    )
    if problems:
        raise ConfigError(*problems)
    return found


def _reasons(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_REJECT_REASONS
    reasons = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    if not 2 <= len(reasons) <= MAX_REJECT_REASONS or any(len(r) > 75 for r in reasons):
        raise ConfigError(
            f"LEAD_REJECT_REASONS must list 2 to {MAX_REJECT_REASONS} comma-separated reasons "
            "of at most 75 characters each (reps ignore long menus)"
        )
    return reasons


def _share(name: str, text: str) -> float:
    """``30%``, ``30`` or ``0.3`` -> 0.3."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text.strip())
    value = float(match[1]) if match else -1.0
    if match and (match[2] or value > 1):
        value /= 100
    if not 0 < value < 1:
        raise ConfigError(f"{name}={text!r} must be a share like 30% (between 0% and 100%)")
    return value


_WORKING = re.compile(
    r"^\s*([a-z]{3})(?:\s*-\s*([a-z]{3}))?\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$"
)


def _working_hours(text: str | None) -> WorkingHours | None:
    if not text:
        return None
    hint = (
        f"LEAD_SLA_WORKING_HOURS={text!r} is not working hours; "
        "use days and hours like 'mon-fri 09:00-17:00'"
    )
    match = _WORKING.match(text.lower())
    if not match or match[1] not in DAYS or (match[2] and match[2] not in DAYS):
        raise ConfigError(hint)
    first = DAYS.index(match[1])
    last = DAYS.index(match[2]) if match[2] else first
    h1, m1, h2, m2 = (int(match[i]) for i in range(3, 7))
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ConfigError(hint)
    start, end = time(h1, m1), time(min(h2, 23), 59 if h2 == 24 else m2)
    if start >= end:
        raise ConfigError(hint)
    days = frozenset(d % 7 for d in range(first, last + 1 if last >= first else last + 8))
    return WorkingHours(days=days, start=start, end=end)

"""The values settings are made of, and how each is read: one line naming the variable and
saying how to fix it when it is wrong (:class:`ConfigError`). Shared by bot.config and the
settings of each part (bot.config_leads)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
USERGROUP_ID = re.compile(r"^S[A-Z0-9]+$")
CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]+$")


class ConfigError(Exception):
    """Missing or invalid settings: one line each in ``lines`` (``str(err)`` joins them),
    each naming the variable and saying how to fix it."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class WeeklyTime:
    """A weekday and a wall-clock time, read in each person's own time zone."""

    weekday: int  # Monday == 0
    at: time

    def __str__(self) -> str:
        return f"{DAYS[self.weekday]} {self.at:%H:%M}"


@dataclass(frozen=True)
class Audience:
    """A team defined either by a fixed list of user IDs or by a Slack user group."""

    users: tuple[str, ...] = ()
    usergroup: str | None = None


def fail(message: str) -> None:
    raise ConfigError(message)


def timezone_setting(name: str, value: str | None) -> str:
    value = value or "UTC"
    check_timezone(name, value)
    return value


def whole(name: str, text: str, low: int, high: int, rule: str) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ConfigError(f"{name}={text!r} {rule}")
    return int(text)


def optional_user_ids(get, name: str) -> tuple[str, ...]:
    return user_ids(get, name) if get(name) else ()


def parse_weekly_time(name: str, text: str) -> WeeklyTime:
    """Parse ``"fri 16:00"`` into a WeeklyTime; raise ConfigError naming ``name``."""
    match = re.match(r"^\s*([A-Za-z]{3})[A-Za-z]*\s+(\d{1,2}):(\d{2})\s*$", text)
    hint = f"{name}={text!r} is not a weekly time; use a day and a 24-hour time like 'fri 16:00'"
    if not match:
        raise ConfigError(hint)
    day, hour, minute = match.group(1).lower(), int(match.group(2)), int(match.group(3))
    if day not in DAYS or hour > 23 or minute > 59:
        raise ConfigError(hint)
    return WeeklyTime(DAYS.index(day), time(hour, minute))


def required(get, name: str, what: str) -> str:
    value = get(name)
    if value is None:
        raise ConfigError(f"{name} is not set: put {what} in .env or the environment")
    return value


def audience(get, prefix: str) -> Audience:
    users_name, group_name = f"{prefix}_USERS", f"{prefix}_USERGROUP"
    users_text, group = get(users_name), get(group_name)
    if users_text and group:
        raise ConfigError(f"set either {users_name} or {group_name}, not both")
    if group:
        if not USERGROUP_ID.match(group):
            raise ConfigError(
                f"{group_name}={group!r} is not a user group ID; use the S... ID of the group"
            )
        return Audience(usergroup=group)
    if not users_text:
        raise ConfigError(
            f"{users_name} or {group_name} is not set: list the {prefix.lower()} team's Slack "
            f"user IDs (U..., comma-separated) or give their user group ID (S...)"
        )
    return Audience(users=user_ids(get, users_name))


def user_ids(get, name: str) -> tuple[str, ...]:
    users = tuple(u.strip() for u in (get(name) or "").split(",") if u.strip())
    bad = [u for u in users if not USER_ID.match(u)]
    if bad or not users:
        raise ConfigError(
            f"{name} has {', '.join(bad) or 'no IDs'}: use Slack user IDs (U...), "
            "comma-separated, not names"
        )
    return tuple(dict.fromkeys(users))


def check_channel(name: str, channel: str) -> None:
    if not CHANNEL_ID.match(channel):
        raise ConfigError(
            f"{name}={channel!r} is not a channel ID; use the ID (C...) shown in "
            "the channel's details, not its name"
        )


def channel_setting(get, name: str) -> str | None:
    channel = get(name)
    if channel is not None:
        check_channel(name, channel)
    return channel


def hours(get, name: str, default: int) -> int:
    text = get(name) or str(default)
    if not text.isdigit() or not 1 <= int(text) <= 24 * 14:
        raise ConfigError(f"{name}={text!r} must be a whole number of hours (1-336)")
    return int(text)


def check_timezone(name: str, value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}={value!r} is not an IANA time zone like Europe/Berlin") from None

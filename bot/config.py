"""Settings: one frozen, typed object built once from the environment (and `.env`).

Every problem is reported as a :class:`ConfigError` whose message is one line naming the
variable and saying how to fix it; ``closeloop`` prints that line and exits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_DATABASE_URL = "sqlite:///closeloop.db"

DEFAULT_REASON_CATEGORIES = (
    "Price",
    "Product gap",
    "Implementation / time to value",
    "Timing or budget",
    "Relationship / trust",
    "Incumbent or competitor",
    "Other",
)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
_USERGROUP_ID = re.compile(r"^S[A-Z0-9]+$")
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]+$")
_EMOJI = re.compile(r"^[a-z0-9_+\-']+$")


class ConfigError(Exception):
    """A missing or invalid setting; ``str(err)`` is the one line shown to the operator."""


@dataclass(frozen=True)
class WeeklyTime:
    """A weekday and a wall-clock time, read in each person's own time zone."""

    weekday: int  # Monday == 0
    at: time

    def __str__(self) -> str:
        return f"{_DAYS[self.weekday]} {self.at:%H:%M}"


@dataclass(frozen=True)
class Audience:
    """A team defined either by a fixed list of user IDs or by a Slack user group."""

    users: tuple[str, ...] = ()
    usergroup: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything Closeloop reads from its environment."""

    slack_bot_token: str
    feedback_channel: str
    sales: Audience
    marketing: Audience
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    database_url: str = DEFAULT_DATABASE_URL
    prompt_schedule: WeeklyTime = field(default_factory=lambda: WeeklyTime(4, time(16, 0)))
    reminder_schedule: WeeklyTime = field(default_factory=lambda: WeeklyTime(0, time(10, 0)))
    ack_emoji: str = "white_check_mark"
    port: int = 3000
    default_timezone: str = "UTC"
    winloss_channel: str = ""  # defaults to feedback_channel
    winloss_escalation_channel: str = ""  # defaults to winloss_channel
    winloss_deadline_hours: int = 24
    winloss_reminder_hours: int = 20
    deals_webhook_secret: str | None = None
    sales_managers: tuple[str, ...] = ()
    admin_users: tuple[str, ...] = ()  # may run /closeloop admin; empty: nobody from Slack
    reason_categories: tuple[str, ...] = DEFAULT_REASON_CATEGORIES
    digest_channel: str = ""  # defaults to feedback_channel
    digest_time: time = time(9, 0)
    digest_timezone: str = "UTC"
    digest_min_sample: int = 5  # below it, the digest shows "3 of 4", not a percentage
    currency: str = "USD"  # ISO 4217 code of deal amounts
    slack_post_rate: float = 5.0  # chat.postMessage calls a second, at most, on average
    outbox_workers: int = 8  # fan-out messages in flight at once (each still paced)
    # How long a sender's claim on an outbox message lasts: it starts no Slack call after a
    # third of it, and another process may take the message over once it has run out.
    outbox_lease_seconds: int = 90

    def __post_init__(self) -> None:
        if not self.winloss_channel:
            object.__setattr__(self, "winloss_channel", self.feedback_channel)
        if not self.winloss_escalation_channel:
            object.__setattr__(self, "winloss_escalation_channel", self.winloss_channel)
        if not self.digest_channel:
            object.__setattr__(self, "digest_channel", self.feedback_channel)

    @property
    def socket_mode(self) -> bool:
        """True when the bot connects out over Socket Mode instead of serving HTTP."""
        return bool(self.slack_app_token)

    def __repr__(self) -> str:  # never print secrets
        return (
            f"Settings(feedback_channel={self.feedback_channel!r}, "
            f"database_url={_redact_url(self.database_url)!r}, socket_mode={self.socket_mode})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); raise ConfigError."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = value.strip()
            return value or None

        bot_token = _required(get, "SLACK_BOT_TOKEN", "the Bot User OAuth Token (xoxb-...)")
        if not bot_token.startswith("xoxb-"):
            raise ConfigError(
                "SLACK_BOT_TOKEN must be a bot token starting with xoxb- "
                "(OAuth & Permissions > Bot User OAuth Token)"
            )
        app_token = get("SLACK_APP_TOKEN")
        if app_token is not None and not app_token.startswith("xapp-"):
            raise ConfigError(
                "SLACK_APP_TOKEN must be an app-level token starting with xapp- "
                "(Basic Information > App-Level Tokens, scope connections:write)"
            )
        signing_secret = get("SLACK_SIGNING_SECRET")
        if app_token is None and signing_secret is None:
            raise ConfigError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify Slack's requests "
                "(Basic Information > Signing Secret), or set SLACK_APP_TOKEN for Socket Mode"
            )

        api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        if not re.match(r"^https?://[^/]+", api_url):
            raise ConfigError(
                f"SLACK_API_URL={api_url!r} is not an http(s) URL; leave it unset for Slack's own"
            )
        api_url = api_url.rstrip("/") + "/"

        channel = _required(get, "FEEDBACK_CHANNEL", "the ID of marketing's channel (C...)")
        _check_channel("FEEDBACK_CHANNEL", channel)

        port_text = get("PORT") or "3000"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"PORT={port_text!r} is not a TCP port number (1-65535)")

        emoji = (get("ACK_EMOJI") or "white_check_mark").strip(":")
        if not _EMOJI.match(emoji):
            raise ConfigError(
                f"ACK_EMOJI={emoji!r} is not an emoji name; use e.g. white_check_mark (no colons)"
            )

        default_tz = get("DEFAULT_TIMEZONE") or "UTC"
        _check_timezone("DEFAULT_TIMEZONE", default_tz)

        winloss_channel = _channel(get, "WINLOSS_CHANNEL")
        escalation_channel = _channel(get, "WINLOSS_ESCALATION_CHANNEL")
        deadline = _hours(get, "WINLOSS_DEADLINE_HOURS", 24)
        if deadline < 2:
            raise ConfigError("WINLOSS_DEADLINE_HOURS must be at least 2 (a reminder comes first)")
        reminder = _hours(get, "WINLOSS_REMINDER_HOURS", max(1, deadline - 4))
        if reminder >= deadline:
            raise ConfigError(
                f"WINLOSS_REMINDER_HOURS={reminder} must be less than "
                f"WINLOSS_DEADLINE_HOURS={deadline}"
            )
        managers = _user_ids(get, "SALES_MANAGERS") if get("SALES_MANAGERS") else ()
        admins = _user_ids(get, "ADMIN_USERS") if get("ADMIN_USERS") else ()
        categories_text = get("WINLOSS_REASON_CATEGORIES")
        categories: tuple[str, ...] = DEFAULT_REASON_CATEGORIES
        if categories_text:
            categories = tuple(
                dict.fromkeys(c.strip() for c in categories_text.split(",") if c.strip())
            )
            if not 2 <= len(categories) <= 50 or any(len(c) > 75 for c in categories):
                raise ConfigError(
                    "WINLOSS_REASON_CATEGORIES must list 2 to 50 comma-separated categories "
                    "of at most 75 characters each"
                )

        digest_tz = get("DIGEST_TIMEZONE") or "UTC"
        _check_timezone("DIGEST_TIMEZONE", digest_tz)
        digest_time_text = get("DIGEST_TIME") or "09:00"
        digest_match = re.match(r"^(\d{1,2}):(\d{2})$", digest_time_text)
        if not digest_match or int(digest_match[1]) > 23 or int(digest_match[2]) > 59:
            raise ConfigError(f"DIGEST_TIME={digest_time_text!r} is not a 24-hour time like 09:00")
        min_sample_text = get("DIGEST_MIN_SAMPLE") or "5"
        if not min_sample_text.isdigit() or not 1 <= int(min_sample_text) <= 1000:
            raise ConfigError(
                f"DIGEST_MIN_SAMPLE={min_sample_text!r} must be a whole number, 1 to 1000"
            )
        currency = get("CURRENCY") or "USD"
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ConfigError(
                f"CURRENCY={currency!r} must be a three-letter ISO 4217 code like USD"
            )

        rate_text = get("SLACK_POST_RATE") or "5"
        try:
            post_rate = float(rate_text)
        except ValueError:
            post_rate = 0.0
        if not 0.1 <= post_rate <= 1000:
            raise ConfigError(
                f"SLACK_POST_RATE={rate_text!r} must be messages a second between 0.1 and 1000"
            )
        workers_text = get("OUTBOX_WORKERS") or "8"
        if not workers_text.isdigit() or not 1 <= int(workers_text) <= 64:
            raise ConfigError(f"OUTBOX_WORKERS={workers_text!r} must be a whole number, 1 to 64")

        lease_text = get("OUTBOX_LEASE_SECONDS") or "90"
        if not lease_text.isdigit() or not 3 <= int(lease_text) <= 3600:
            raise ConfigError(
                f"OUTBOX_LEASE_SECONDS={lease_text!r} must be a whole number of seconds, 3 to 3600"
            )

        return cls(
            slack_post_rate=post_rate,
            outbox_workers=int(workers_text),
            outbox_lease_seconds=int(lease_text),
            digest_channel=_channel(get, "DIGEST_CHANNEL") or "",
            digest_time=time(int(digest_match[1]), int(digest_match[2])),
            digest_timezone=digest_tz,
            digest_min_sample=int(min_sample_text),
            currency=currency,
            winloss_channel=winloss_channel or "",
            winloss_escalation_channel=escalation_channel or "",
            winloss_deadline_hours=deadline,
            winloss_reminder_hours=reminder,
            deals_webhook_secret=get("DEALS_WEBHOOK_SECRET"),
            sales_managers=managers,
            admin_users=admins,
            reason_categories=categories,
            slack_bot_token=bot_token,
            slack_signing_secret=signing_secret,
            slack_app_token=app_token,
            slack_api_url=api_url,
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            feedback_channel=channel,
            sales=_audience(get, "SALES"),
            marketing=_audience(get, "MARKETING"),
            prompt_schedule=parse_weekly_time(
                "PROMPT_SCHEDULE", get("PROMPT_SCHEDULE") or "fri 16:00"
            ),
            reminder_schedule=parse_weekly_time(
                "REMINDER_SCHEDULE", get("REMINDER_SCHEDULE") or "mon 10:00"
            ),
            ack_emoji=emoji,
            port=int(port_text),
            default_timezone=default_tz,
        )


def parse_weekly_time(name: str, text: str) -> WeeklyTime:
    """Parse ``"fri 16:00"`` into a WeeklyTime; raise ConfigError naming ``name``."""
    match = re.match(r"^\s*([A-Za-z]{3})[A-Za-z]*\s+(\d{1,2}):(\d{2})\s*$", text)
    hint = f"{name}={text!r} is not a weekly time; use a day and a 24-hour time like 'fri 16:00'"
    if not match:
        raise ConfigError(hint)
    day, hour, minute = match.group(1).lower(), int(match.group(2)), int(match.group(3))
    if day not in _DAYS or hour > 23 or minute > 59:
        raise ConfigError(hint)
    return WeeklyTime(_DAYS.index(day), time(hour, minute))


def _required(get, name: str, what: str) -> str:
    value = get(name)
    if value is None:
        raise ConfigError(f"{name} is not set: put {what} in .env or the environment")
    return value


def _audience(get, prefix: str) -> Audience:
    users_name, group_name = f"{prefix}_USERS", f"{prefix}_USERGROUP"
    users_text, group = get(users_name), get(group_name)
    if users_text and group:
        raise ConfigError(f"set either {users_name} or {group_name}, not both")
    if group:
        if not _USERGROUP_ID.match(group):
            raise ConfigError(
                f"{group_name}={group!r} is not a user group ID; use the S... ID of the group"
            )
        return Audience(usergroup=group)
    if not users_text:
        raise ConfigError(
            f"{users_name} or {group_name} is not set: list the {prefix.lower()} team's Slack "
            f"user IDs (U..., comma-separated) or give their user group ID (S...)"
        )
    return Audience(users=_user_ids(get, users_name))


def _user_ids(get, name: str) -> tuple[str, ...]:
    users = tuple(u.strip() for u in (get(name) or "").split(",") if u.strip())
    bad = [u for u in users if not _USER_ID.match(u)]
    if bad or not users:
        raise ConfigError(
            f"{name} has {', '.join(bad) or 'no IDs'}: use Slack user IDs (U...), "
            "comma-separated, not names"
        )
    return tuple(dict.fromkeys(users))


def _check_channel(name: str, channel: str) -> None:
    if not _CHANNEL_ID.match(channel):
        raise ConfigError(
            f"{name}={channel!r} is not a channel ID; use the ID (C...) shown in "
            "the channel's details, not its name"
        )


def _channel(get, name: str) -> str | None:
    channel = get(name)
    if channel is not None:
        _check_channel(name, channel)
    return channel


def _hours(get, name: str, default: int) -> int:
    text = get(name) or str(default)
    if not text.isdigit() or not 1 <= int(text) <= 24 * 14:
        raise ConfigError(f"{name}={text!r} must be a whole number of hours (1-336)")
    return int(text)


def _check_timezone(name: str, value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}={value!r} is not an IANA time zone like Europe/Berlin") from None


def _redact_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


# HTTP mode's gunicorn (bot.wsgi), by default: two workers a usable CPU, at most four, of four
# threads each. With one interpreter lock per process, two workers of eight threads answered a
# burst of 50 requests one lock at a time on each core (bench/ack_bench.py: the slowest answer
# of a burst round, median ~70 ms); four workers of four let the operating system keep both
# cores busy (~55 ms). More than four adds memory (~50 MiB each) and database connections, not
# speed, at the request rates a sales org sends.
MAX_DEFAULT_WORKERS = 4
DEFAULT_THREADS = 4


def web_concurrency() -> int:
    """Worker processes: ``WEB_CONCURRENCY``, or two a usable CPU, at most four."""
    return _count("WEB_CONCURRENCY", min(MAX_DEFAULT_WORKERS, 2 * usable_cpus()))


def usable_cpus() -> int:
    """CPUs this process may run on (all of the machine's where the system cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def web_threads() -> int:
    """Request threads a worker: ``WEB_THREADS``, or four."""
    return _count("WEB_THREADS", DEFAULT_THREADS)


def _count(name: str, default: int) -> int:
    text = (os.environ.get(name) or "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 256:
        raise ConfigError(f"{name}={text!r} must be a whole number from 1 to 256")
    return int(text)

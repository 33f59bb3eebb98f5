"""Settings: one frozen, typed object built once from the environment (and `.env`).

Every problem is reported as a :class:`ConfigError` whose message is one line naming the
variable and saying how to fix it; ``closeloop`` prints that line and exits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time

from bot.config_crm import (
    DEFAULT_HUBSPOT_LEAD_STATUSES,
    hubspot_settings,
    pipedrive_settings,
    salesforce_settings,
)
from bot.config_leads import LeadSettings, lead_settings
from bot.config_values import (
    Audience,
    ConfigError,
    WeeklyTime,
    audience,
    channel_setting,
    check_channel,
    fail,
    hours,
    optional_user_ids,
    parse_weekly_time,
    required,
    timezone_setting,
    whole,
)

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_HUBSPOT_API_URL = "https://api.hubapi.com"
DEFAULT_PIPEDRIVE_API_URL = "https://api.pipedrive.com/v1"  # or https://<co>.pipedrive.com/api/v1
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

_EMOJI = re.compile(r"^[a-z0-9_+\-']+$")


# Settings whose values never appear in a log line (bot.logs redacts them). Every field of
# Settings named *_token, *_secret or *_password must be here (test_secrets_in_logs.py).
SECRET_SETTINGS = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "DEALS_WEBHOOK_SECRET",
    "HUBSPOT_CLIENT_SECRET",
    "HUBSPOT_ACCESS_TOKEN",
    "SALESFORCE_WEBHOOK_SECRET",
    "PIPEDRIVE_WEBHOOK_PASSWORD",
    "PIPEDRIVE_API_TOKEN",
)


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
    # HubSpot (POST /hooks/hubspot): off until the app's client secret and a private app's
    # access token are both set (docs/crm-hubspot.md).
    hubspot_client_secret: str | None = None
    hubspot_access_token: str | None = None
    hubspot_api_url: str = DEFAULT_HUBSPOT_API_URL
    hubspot_webhook_url: str | None = None  # the URL HubSpot calls, when behind a proxy
    # Write-back (off unless set): a logged entry's words and category set on the HubSpot
    # deal's properties with these internal names (docs/crm-hubspot.md).
    hubspot_writeback_reason_property: str | None = None
    hubspot_writeback_category_property: str | None = None
    # Lead write-back (off unless set): a lead's latest rating set on its HubSpot contact, in
    # the property (usually hs_lead_status) as one of these values, and a rejection's reason
    # in the other property (docs/crm-hubspot.md).
    hubspot_writeback_lead_status_property: str | None = None
    hubspot_writeback_lead_reason_property: str | None = None
    hubspot_writeback_lead_statuses: tuple[tuple[str, str], ...] = DEFAULT_HUBSPOT_LEAD_STATUSES
    # The daily reconciliation with the CRMs read by API token asks for deals closed in the
    # last CRM_SYNC_DAYS days (bot.intake.deliveries.sync_due).
    crm_sync_days: int = 3
    # Salesforce (POST /hooks/salesforce, Outbound Messages): off until the org's id and the
    # endpoint's secret are both set (docs/crm-salesforce.md).
    salesforce_org_id: str | None = None
    salesforce_webhook_secret: str | None = None
    salesforce_owner_field: str = "Owner_Email__c"  # a formula field: the owner's email
    salesforce_owners: tuple[tuple[str, str], ...] = ()  # OwnerId (15 chars) -> email or U...
    salesforce_loss_reason_field: str = "Loss_Reason__c"
    salesforce_win_reason_field: str = "Win_Reason__c"
    # Pipedrive (POST /hooks/pipedrive): off until the webhook's basic-auth user and password
    # and an API token are all set (docs/crm-pipedrive.md).
    pipedrive_webhook_user: str | None = None
    pipedrive_webhook_password: str | None = None
    pipedrive_api_token: str | None = None
    pipedrive_api_url: str = DEFAULT_PIPEDRIVE_API_URL
    # Write-back (off unless set): a logged entry's words and category set on the Pipedrive
    # deal's fields with these keys (a custom field's 40-character key; docs/crm-pipedrive.md).
    pipedrive_writeback_reason_field: str | None = None
    pipedrive_writeback_category_field: str | None = None
    # Lead write-back (off unless set): a lead's latest rating and a rejection's reason set on
    # its Pipedrive lead's custom fields (leads share the deals'; docs/crm-pipedrive.md).
    pipedrive_writeback_lead_rating_field: str | None = None
    pipedrive_writeback_lead_reason_field: str | None = None
    # The lead hand-off loop (bot.config_leads): the SLA, the taxonomy, the Monday report.
    leads: LeadSettings = field(default_factory=LeadSettings)

    def __post_init__(self) -> None:
        if not self.winloss_channel:
            object.__setattr__(self, "winloss_channel", self.feedback_channel)
        if not self.winloss_escalation_channel:
            object.__setattr__(self, "winloss_escalation_channel", self.winloss_channel)
        if not self.digest_channel:
            object.__setattr__(self, "digest_channel", self.feedback_channel)
        leads = self.leads
        escalation = leads.escalation_channel or self.winloss_escalation_channel
        object.__setattr__(
            self,
            "leads",
            replace(
                leads,
                escalation_channel=escalation,
                sales_channel=leads.sales_channel or escalation,
                report_channel=leads.report_channel or self.feedback_channel,
            ),
        )

    @property
    def serves_webhooks(self) -> bool:
        """True when a CRM may call us: then Socket Mode serves HTTP too (the hooks)."""
        return (
            bool(self.deals_webhook_secret)
            or self.hubspot_configured
            or self.salesforce_configured
            or self.pipedrive_configured
        )

    @property
    def hubspot_configured(self) -> bool:
        """True when POST /hooks/hubspot is on (its secret and token are both set)."""
        return bool(self.hubspot_client_secret and self.hubspot_access_token)

    @property
    def salesforce_configured(self) -> bool:
        """True when POST /hooks/salesforce is on (the org's id and the secret are both set)."""
        return bool(self.salesforce_org_id and self.salesforce_webhook_secret)

    @property
    def pipedrive_configured(self) -> bool:
        """True when POST /hooks/pipedrive is on (its credentials and API token all set)."""
        return bool(
            self.pipedrive_webhook_user
            and self.pipedrive_webhook_password
            and self.pipedrive_api_token
        )

    @property
    def hubspot_writeback(self) -> bool:
        """True when logged entries are written back to HubSpot deals."""
        return self.hubspot_configured and bool(
            self.hubspot_writeback_reason_property or self.hubspot_writeback_category_property
        )

    @property
    def pipedrive_writeback(self) -> bool:
        """True when logged entries are written back to Pipedrive deals."""
        return self.pipedrive_configured and bool(
            self.pipedrive_writeback_reason_field or self.pipedrive_writeback_category_field
        )

    @property
    def writeback_crms(self) -> frozenset[str]:
        """The CRMs (a deal's external_id prefix: "hubspot", "pipedrive") written back to."""
        return frozenset(
            name
            for name, on in (
                ("hubspot", self.hubspot_writeback),
                ("pipedrive", self.pipedrive_writeback),
            )
            if on
        )

    @property
    def hubspot_lead_writeback(self) -> bool:
        """True when lead ratings are written back to HubSpot contacts."""
        return self.hubspot_configured and bool(
            self.hubspot_writeback_lead_status_property
            or self.hubspot_writeback_lead_reason_property
        )

    @property
    def pipedrive_lead_writeback(self) -> bool:
        """True when lead ratings are written back to Pipedrive leads."""
        return self.pipedrive_configured and bool(
            self.pipedrive_writeback_lead_rating_field or self.pipedrive_writeback_lead_reason_field
        )

    @property
    def lead_writeback_crms(self) -> frozenset[str]:
        """The CRMs (a lead's external_id prefix) lead ratings are written back to."""
        return frozenset(
            name
            for name, on in (
                ("hubspot", self.hubspot_lead_writeback),
                ("pipedrive", self.pipedrive_lead_writeback),
            )
            if on
        )

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
    def from_env(cls, environ: Mapping[str, str] | None = None, *, slack: bool = True) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``).

        Every missing or invalid setting is found before anything is raised: the
        :class:`ConfigError` carries one line per problem (``err.lines``). With ``slack``
        False (commands that only read and write the database: migrate, export, import,
        digest without --post, competitors) the Slack settings are neither required nor read.
        """
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = value.strip()
            return value or None

        def take(parse, *args, default=None):
            """``parse(*args)``, or ``default`` with its ConfigError noted."""
            try:
                return parse(*args)
            except ConfigError as err:
                problems.extend(err.lines)
                return default

        slack_fields: dict[str, object] = {}
        if slack:
            slack_fields = _slack_settings(get, take)
        else:
            slack_fields = {
                "slack_bot_token": NOT_CONFIGURED_TOKEN,
                "feedback_channel": "",
                "sales": Audience(),
                "marketing": Audience(),
            }

        port = take(_port, get("PORT") or "3000", default=3000)
        emoji = take(_emoji, get("ACK_EMOJI") or "white_check_mark", default="white_check_mark")
        default_tz = take(
            timezone_setting, "DEFAULT_TIMEZONE", get("DEFAULT_TIMEZONE"), default="UTC"
        )
        deadline = take(hours, get, "WINLOSS_DEADLINE_HOURS", 24, default=24)
        if deadline < 2:
            problems.append("WINLOSS_DEADLINE_HOURS must be at least 2 (a reminder comes first)")
            deadline = 24
        reminder = take(
            hours, get, "WINLOSS_REMINDER_HOURS", max(1, deadline - 4), default=deadline - 1
        )
        if reminder >= deadline:
            problems.append(
                f"WINLOSS_REMINDER_HOURS={reminder} must be less than "
                f"WINLOSS_DEADLINE_HOURS={deadline}"
            )
        categories = take(
            _categories, get("WINLOSS_REASON_CATEGORIES"), default=DEFAULT_REASON_CATEGORIES
        )
        digest_tz = take(timezone_setting, "DIGEST_TIMEZONE", get("DIGEST_TIMEZONE"), default="UTC")
        digest_at = take(_digest_time, get("DIGEST_TIME") or "09:00", default=time(9, 0))
        min_sample = take(
            whole,
            "DIGEST_MIN_SAMPLE",
            get("DIGEST_MIN_SAMPLE") or "5",
            1,
            1000,
            "must be a whole number, 1 to 1000",
            default=5,
        )
        currency = take(_currency, get("CURRENCY") or "USD", default="USD")
        post_rate = take(_post_rate, get("SLACK_POST_RATE") or "5", default=5.0)
        workers = take(
            whole,
            "OUTBOX_WORKERS",
            get("OUTBOX_WORKERS") or "8",
            1,
            64,
            "must be a whole number, 1 to 64",
            default=8,
        )
        lease = take(
            whole,
            "OUTBOX_LEASE_SECONDS",
            get("OUTBOX_LEASE_SECONDS") or "90",
            3,
            3600,
            "must be a whole number of seconds, 3 to 3600",
            default=90,
        )
        prompt_schedule = take(
            parse_weekly_time, "PROMPT_SCHEDULE", get("PROMPT_SCHEDULE") or "fri 16:00"
        )
        reminder_schedule = take(
            parse_weekly_time, "REMINDER_SCHEDULE", get("REMINDER_SCHEDULE") or "mon 10:00"
        )
        sync_days = take(
            whole,
            "CRM_SYNC_DAYS",
            get("CRM_SYNC_DAYS") or "3",
            1,
            60,
            "must be a whole number of days, 1 to 60",
            default=3,
        )
        hubspot = take(hubspot_settings, get, default={})
        salesforce = take(salesforce_settings, get, default={})
        pipedrive = take(pipedrive_settings, get, default={})
        leads = take(
            lambda: lead_settings(get, digest_timezone=digest_tz or "UTC"), default=LeadSettings()
        )
        if problems:
            raise ConfigError(*problems)
        return cls(
            leads=leads,
            **hubspot,
            **salesforce,
            **pipedrive,
            **slack_fields,  # type: ignore[arg-type]
            slack_post_rate=post_rate,
            outbox_workers=workers,
            outbox_lease_seconds=lease,
            crm_sync_days=sync_days,
            digest_time=digest_at,
            digest_timezone=digest_tz,
            digest_min_sample=min_sample,
            currency=currency,
            winloss_deadline_hours=deadline,
            winloss_reminder_hours=reminder,
            deals_webhook_secret=get("DEALS_WEBHOOK_SECRET"),
            reason_categories=categories,
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            prompt_schedule=prompt_schedule,
            reminder_schedule=reminder_schedule,
            ack_emoji=emoji,
            port=port,
            default_timezone=default_tz,
        )


# The token a Settings built for a database-only command carries: it never reaches Slack.
NOT_CONFIGURED_TOKEN = "xoxb-not-configured"


def _slack_settings(get, take) -> dict[str, object]:
    """The settings that name Slack things: tokens, channels, people."""
    bot_token = take(required, get, "SLACK_BOT_TOKEN", "the Bot User OAuth Token (xoxb-...)")
    if bot_token is not None and not bot_token.startswith("xoxb-"):
        take(
            fail,
            "SLACK_BOT_TOKEN must be a bot token starting with xoxb- "
            "(OAuth & Permissions > Bot User OAuth Token)",
        )
    app_token = get("SLACK_APP_TOKEN")
    if app_token is not None and not app_token.startswith("xapp-"):
        take(
            fail,
            "SLACK_APP_TOKEN must be an app-level token starting with xapp- "
            "(Basic Information > App-Level Tokens, scope connections:write)",
        )
    signing_secret = get("SLACK_SIGNING_SECRET")
    if app_token is None and signing_secret is None:
        take(
            fail,
            "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify Slack's requests "
            "(Basic Information > Signing Secret), or set SLACK_APP_TOKEN for Socket Mode",
        )
    api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    if not re.match(r"^https?://[^/]+", api_url):
        take(
            fail,
            f"SLACK_API_URL={api_url!r} is not an http(s) URL; leave it unset for Slack's own",
        )
    channel = take(required, get, "FEEDBACK_CHANNEL", "the ID of marketing's channel (C...)")
    if channel is not None:
        take(check_channel, "FEEDBACK_CHANNEL", channel)
    return {
        "slack_bot_token": bot_token or "",
        "slack_signing_secret": signing_secret,
        "slack_app_token": app_token,
        "slack_api_url": api_url.rstrip("/") + "/",
        "feedback_channel": channel or "",
        "sales": take(audience, get, "SALES", default=Audience()),
        "marketing": take(audience, get, "MARKETING", default=Audience()),
        "sales_managers": take(optional_user_ids, get, "SALES_MANAGERS", default=()),
        "admin_users": take(optional_user_ids, get, "ADMIN_USERS", default=()),
        "winloss_channel": take(channel_setting, get, "WINLOSS_CHANNEL") or "",
        "winloss_escalation_channel": take(channel_setting, get, "WINLOSS_ESCALATION_CHANNEL")
        or "",
        "digest_channel": take(channel_setting, get, "DIGEST_CHANNEL") or "",
    }


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"PORT={text!r} is not a TCP port number (1-65535)")
    return int(text)


def _emoji(text: str) -> str:
    emoji = text.strip(":")
    if not _EMOJI.match(emoji):
        raise ConfigError(
            f"ACK_EMOJI={emoji!r} is not an emoji name; use e.g. white_check_mark (no colons)"
        )
    return emoji


def _categories(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_REASON_CATEGORIES
    categories = tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    if not 2 <= len(categories) <= 50 or any(len(c) > 75 for c in categories):
        raise ConfigError(
            "WINLOSS_REASON_CATEGORIES must list 2 to 50 comma-separated categories "
            "of at most 75 characters each"
        )
    return categories


def _digest_time(text: str) -> time:
    match = re.match(r"^(\d{1,2}):(\d{2})$", text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ConfigError(f"DIGEST_TIME={text!r} is not a 24-hour time like 09:00")
    return time(int(match[1]), int(match[2]))


def _currency(text: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", text):
        raise ConfigError(f"CURRENCY={text!r} must be a three-letter ISO 4217 code like USD")
    return text


def _post_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not 0.1 <= rate <= 1000:
        raise ConfigError(
            f"SLACK_POST_RATE={text!r} must be messages a second between 0.1 and 1000"
        )
    return rate


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

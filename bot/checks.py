"""``closeloop check``: the configuration, verified against Slack before anything is sent.

One line per finding, ``closeloop check: ok|warning|problem: ...``, each problem saying how
to fix it. ``closeloop run`` runs the same checks at start and refuses to start on a
problem (see :func:`at_start`). Only reads are made: auth.test, conversations.info,
usergroups.users.list, users.info (and HubSpot's and Pipedrive's APIs when they are on).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TextIO
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.config import Settings
from bot.config_values import USER_ID
from bot.intake.hubspot_api import HubSpotApi, HubSpotError
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError
from bot.slack import scopes as slack_scopes
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

PREFIX = "closeloop check: "
OK, WARNING, PROBLEM = "ok", "warning", "problem"

# closeloop run: a Slack it cannot reach is tried again after these pauses (seconds), then
# it refuses to start (a bot that cannot reach Slack cannot work).
RUN_RETRY_PAUSES = (1.0, 2.0)

INVITE = "type /invite @Closeloop in that channel"
REINSTALL = "add it under OAuth & Permissions > Bot Token Scopes and reinstall the app"
TOKEN_GONE = ("token_revoked", "account_inactive", "token_expired", "app_uninstalled")

_CHANNEL_SETTINGS = (
    ("FEEDBACK_CHANNEL", "feedback_channel"),
    ("WINLOSS_CHANNEL", "winloss_channel"),
    ("WINLOSS_ESCALATION_CHANNEL", "winloss_escalation_channel"),
    ("DIGEST_CHANNEL", "digest_channel"),
    ("LEAD_ESCALATION_CHANNEL", "leads.escalation_channel"),
    ("LEAD_SALES_CHANNEL", "leads.sales_channel"),
    ("LEAD_REPORT_CHANNEL", "leads.report_channel"),
)


@dataclass(frozen=True)
class Finding:
    level: str  # OK, WARNING or PROBLEM
    text: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.level}: {self.text}"


class _Unreachable(Exception):
    """Slack could not be reached: the checks stop with one line."""


_quiet = logging.getLogger("bot.checks.client")
_quiet.setLevel(logging.CRITICAL)


def check_client(settings: Settings, *, timeout: int = 10) -> WebClient:
    """A client for the checks: rate limits and 5xx waited out briefly; connection errors
    are not retried here (:func:`findings` reports them, :func:`at_start` tries again)."""
    client = WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=timeout,
        logger=_quiet,  # a failed request is a finding, not also a log line
    )
    client.retry_handlers = [
        RateLimitErrorRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=1),
    ]
    return client


def findings(
    settings: Settings,
    client: WebClient,
    *,
    retry_pauses: tuple[float, ...] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Finding]:
    """Every finding, in order; after a rejected token or an unreachable Slack, nothing more
    (every other check would fail the same way). ``retry_pauses``: auth.test is tried again
    after each pause while Slack cannot be reached."""
    try:
        granted = yield from _token(settings, client, retry_pauses, sleep)
        if granted is None:
            return
        missing = yield from _scopes(granted)
        yield from _channels(settings, client, missing)
        yield from _groups(settings, client, missing)
        yield from _users(settings, client, missing)
    except _Unreachable as err:
        yield Finding(PROBLEM, str(err))
        return
    yield from _webhook(settings)
    yield from _hubspot(settings)
    yield from _pipedrive(settings)
    yield from _salesforce(settings)


def main(settings: Settings, *, out: TextIO = sys.stdout) -> int:
    """``closeloop check``: print every finding; 0 when there is no problem, else 1."""
    problems = 0
    for finding in findings(settings, check_client(settings)):
        print(finding, file=out, flush=True)
        problems += finding.level == PROBLEM
    if problems:
        print(f"{PREFIX}{problems} problem(s) found", file=out)
        return 1
    print(f"{PREFIX}all is well", file=out)
    return 0


def at_start(settings: Settings, *, out: TextIO = sys.stderr) -> bool:
    """``closeloop run``'s check before anything starts. On a problem: the problems and
    warnings printed (the same lines as ``closeloop check``), and False. Otherwise the
    warnings are logged (in LOG_FORMAT, like everything a running bot says), and True."""
    found = list(findings(settings, check_client(settings), retry_pauses=RUN_RETRY_PAUSES))
    if not any(f.level == PROBLEM for f in found):
        for finding in found:
            if finding.level == WARNING:
                log.warning("%s", finding)
        return True
    for finding in found:
        if finding.level != OK:
            print(finding, file=out, flush=True)
    print("closeloop: not started: fix the problems above (closeloop check lists them)", file=out)
    return False


# --- the checks -----------------------------------------------------------------------


def _token(settings, client, retry_pauses, sleep):
    """auth.test; the granted scopes (None: stop here)."""
    pauses = list(retry_pauses)
    while True:
        try:
            response = client.auth_test()
            break
        except SlackApiError as err:
            if err.response.status_code != 200 or not err.response.get("error"):
                raise _Unreachable(_http_error(settings, err)) from None
            code = err.response["error"]
            yield Finding(PROBLEM, _token_refused(code))
            return None
        except SLACK_ERRORS as err:
            if not pauses:
                raise _Unreachable(_network_error(settings, err)) from None
            sleep(pauses.pop(0))
    yield Finding(
        OK,
        f"SLACK_BOT_TOKEN is valid: bot @{response.get('user')} "
        f"in the workspace {response.get('team')}",
    )
    header = _header(response.headers, "x-oauth-scopes")
    if header is None:
        yield Finding(WARNING, "Slack did not say which scopes the token has; not checked")
        return frozenset(slack_scopes.NEEDED)
    return slack_scopes.parse_granted(header)


def _scopes(granted: frozenset[str]):
    """One problem per scope Closeloop needs and the token lacks; the missing scopes."""
    missing = sorted(slack_scopes.NEEDED - granted)
    for scope in missing:
        users = [m for m in slack_scopes.METHODS_USED if _uses(m, scope)]
        events = [e for e, s in slack_scopes.EVENT_SCOPES.items() if s == scope]
        why = ", ".join((users + events)[:2]) + (", ..." if len(users + events) > 2 else "")
        yield Finding(PROBLEM, f"scope {scope} is missing (for {why}): {REINSTALL}")
    if not missing:
        yield Finding(OK, f"the token has the {len(slack_scopes.NEEDED)} scopes Closeloop uses")
    return frozenset(missing)


def _uses(method: str, scope: str) -> bool:
    kinds = slack_scopes.METHODS_USED[method]
    if kinds:
        return any(slack_scopes.scope_for(method, k) == scope for k in kinds)
    return scope in slack_scopes.METHOD_SCOPES[method]


def _channels(settings: Settings, client: WebClient, missing: frozenset[str]):
    names: dict[str, list[str]] = {}  # channel ID -> the settings naming it
    for name, attr in _CHANNEL_SETTINGS:
        names.setdefault(attrgetter(attr)(settings), []).append(name)
    for channel, settings_names in names.items():
        label = f"{settings_names[0]}={channel}"
        if len(settings_names) > 1:
            label += f" (also {', '.join(settings_names[1:])})"
        response = yield from _read(
            settings, client.conversations_info, missing, label, channel=channel
        )
        if response is None:
            continue
        if response == "channel_not_found":
            yield Finding(
                PROBLEM,
                f"{label}: no such channel (channel_not_found): copy the ID from the "
                "channel's details (a private channel: /invite @Closeloop there first)",
            )
            continue
        if isinstance(response, str):
            yield Finding(PROBLEM, f"{label}: Slack answered {response}")
            continue
        info = response["channel"]
        where = f"#{info.get('name') or channel}"
        if info.get("is_archived"):
            yield Finding(PROBLEM, f"{label}: {where} is archived: unarchive it or pick another")
        elif not info.get("is_member"):
            yield Finding(PROBLEM, f"{label}: the bot is not in {where}: {INVITE}")
        else:
            yield Finding(OK, f"{label} is {where}, and the bot is in it")


def _groups(settings: Settings, client: WebClient, missing: frozenset[str]):
    for prefix, audience in (("SALES", settings.sales), ("MARKETING", settings.marketing)):
        if audience.usergroup is None:
            continue
        label = f"{prefix}_USERGROUP={audience.usergroup}"
        response = yield from _read(
            settings, client.usergroups_users_list, missing, label, usergroup=audience.usergroup
        )
        if response is None:
            continue
        if isinstance(response, str):
            why = "no such user group" if response == "no_such_subteam" else "refused"
            yield Finding(
                PROBLEM,
                f"{label}: {why} ({response}): copy the group's ID (S...) from its page "
                "in People > User groups",
            )
            continue
        members = response.get("users") or []
        if members:
            yield Finding(OK, f"{label} has {len(members)} member(s)")
        else:
            yield Finding(WARNING, f"{label} has no members: nobody in it will be reached")


def _users(settings: Settings, client: WebClient, missing: frozenset[str]):
    lists = (
        ("SALES_USERS", settings.sales.users),
        ("MARKETING_USERS", settings.marketing.users),
        ("SALES_MANAGERS", settings.sales_managers),
        ("ADMIN_USERS", settings.admin_users),
        ("DEFINITION_OWNERS", settings.leads.definition_owners),
        (
            "SALESFORCE_OWNERS",
            tuple(owner for _, owner in settings.salesforce_owners if USER_ID.match(owner)),
        ),
    )
    for name, user_ids in lists:
        good = 0
        for user_id in user_ids:
            label = f"{name}: {user_id}"
            response = yield from _read(settings, client.users_info, missing, label, user=user_id)
            if response is None:
                continue
            if response in ("user_not_found", "users_not_found"):
                yield Finding(
                    PROBLEM,
                    f"{label}: no such user ({response}): copy the member ID (U...) from "
                    "their profile",
                )
            elif isinstance(response, str):
                yield Finding(PROBLEM, f"{label}: Slack answered {response}")
            elif response["user"].get("deleted"):
                yield Finding(PROBLEM, f"{label} is deactivated: remove it from {name}")
            elif response["user"].get("is_bot"):
                yield Finding(PROBLEM, f"{label} is a bot, not a person: remove it from {name}")
            else:
                good += 1
        if good and good == len(user_ids):
            yield Finding(OK, f"{name}: {good} person(s) found")


def _webhook(settings: Settings):
    if settings.deals_webhook_secret:
        yield Finding(OK, "DEALS_WEBHOOK_SECRET is set (the deal webhook verifies signatures)")
    else:
        yield Finding(
            WARNING,
            "DEALS_WEBHOOK_SECRET is not set: the deal webhook (/hooks/deal-closed) "
            "answers 503 until it is",
        )


def _hubspot(settings: Settings):
    """HubSpot's settings, and its token tried with cheap reads (the deal pipelines and one
    owner: what /hooks/hubspot needs to turn a delivery into a deal; one contact: what it
    needs for a lead, a warning only when refused)."""
    if not settings.hubspot_configured:
        yield Finding(OK, "HubSpot is off (HUBSPOT_CLIENT_SECRET and HUBSPOT_ACCESS_TOKEN unset)")
        return
    assert settings.hubspot_access_token is not None
    api = HubSpotApi(api_url=settings.hubspot_api_url, token=settings.hubspot_access_token)
    try:
        pipelines = api.pipelines()
        api.can_read_owners()
    except HubSpotError as err:
        if err.status == 401:
            yield Finding(
                PROBLEM,
                f"HubSpot refused HUBSPOT_ACCESS_TOKEN ({err}): copy the access token of the "
                "private app again (HubSpot: Settings > Integrations > Private apps)",
            )
        elif err.status == 403:
            yield Finding(
                PROBLEM,
                f"HUBSPOT_ACCESS_TOKEN lacks a scope ({err}): give the private app "
                "crm.objects.deals.read and crm.objects.owners.read",
            )
        else:
            yield Finding(
                WARNING,
                f"HubSpot's API could not be read ({err}): its deliveries are stored and "
                "processed once it can",
            )
        return
    closing = sum(1 for stages in pipelines.values() for s in stages.values() if s.outcome)
    if closing:
        yield Finding(
            OK,
            f"HUBSPOT_ACCESS_TOKEN is valid: {len(pipelines)} deal pipeline(s), {closing} "
            "closed won or lost stage(s)",
        )
    else:
        yield Finding(
            WARNING,
            "HubSpot has no closed won or lost deal stage (closed, probability 1.0 or 0.0): "
            "no deal from HubSpot will be asked about",
        )
    try:
        api.can_read_contacts()
    except HubSpotError as err:
        if err.status in (401, 403):
            yield Finding(
                WARNING,
                f"HUBSPOT_ACCESS_TOKEN cannot read contacts ({err}): leads handed over in "
                "HubSpot (contacts becoming marketing qualified) wait, stored, until the "
                "private app has crm.objects.contacts.read; deals are not affected",
            )
    where = settings.hubspot_webhook_url or "https://<this host>/hooks/hubspot"
    yield Finding(OK, f"HubSpot's webhooks are verified as sent to {where}")
    yield from _hubspot_writeback(settings, api)


def _hubspot_writeback(settings: Settings, api: HubSpotApi):
    """Each write-back property read (``GET /crm/v3/properties/deals/{name}``, and
    ``/contacts/{name}`` for lead write-back): one line each. The writes themselves (scopes
    crm.objects.deals.write, crm.objects.contacts.write) are not tried: they would change
    a deal or a contact."""
    yield from _hubspot_properties(
        (
            ("HUBSPOT_WRITEBACK_REASON_PROPERTY", settings.hubspot_writeback_reason_property),
            ("HUBSPOT_WRITEBACK_CATEGORY_PROPERTY", settings.hubspot_writeback_category_property),
        ),
        api.deal_property,
        noun="deal",
        create="Settings > Properties > Deal properties, a single-line or multi-line text",
        what="entries",
        scopes="crm.schemas.deals.read and crm.objects.deals.write",
        values={},
    )
    status = settings.hubspot_writeback_lead_status_property
    statuses = dict(settings.hubspot_writeback_lead_statuses)
    yield from _hubspot_properties(
        (
            ("HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY", status),
            (
                "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY",
                settings.hubspot_writeback_lead_reason_property,
            ),
        ),
        api.contact_property,
        noun="contact",
        create="Settings > Properties > Contact properties; the lead status is the default "
        "hs_lead_status",
        what="lead ratings",
        scopes="crm.schemas.contacts.read and crm.objects.contacts.write",
        values={
            "HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY": tuple(statuses.values()),
            "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY": settings.leads.reject_reasons,
        },
        as_values={
            "HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY": ", ".join(
                f"{k}={v}" for k, v in statuses.items()
            )
        },
    )


def _hubspot_properties(
    wanted,
    read,
    *,
    noun: str,
    create: str,
    what: str,
    scopes: str,
    values: Mapping[str, Sequence[str]],
    as_values: Mapping[str, str] | None = None,
):
    """Each named property read with ``read``: one line each. A dropdown (an enumeration
    with options) must have every value Closeloop writes in it (``values``, by setting):
    HubSpot refuses any other. ``as_values``: how a setting's values are said."""
    as_values = as_values or {}
    for setting, name in wanted:
        if not name:
            continue
        try:
            prop = read(name)
        except HubSpotError as err:
            if err.not_found:
                yield Finding(
                    PROBLEM,
                    f"{setting}={name}: HubSpot has no {noun} property by that internal name: "
                    f"create it ({create}) or correct the name; {what} cannot be written back",
                )
            elif err.status == 403:
                yield Finding(
                    PROBLEM,
                    f"{setting}={name}: HUBSPOT_ACCESS_TOKEN may not read {noun} properties "
                    f"({err}): give the private app {scopes}",
                )
            else:
                yield Finding(WARNING, f"{setting}={name} could not be checked ({err})")
            continue
        kind = prop.get("fieldType") or prop.get("type") or "?"
        label = prop.get("label") or name
        options = [o.get("value") for o in prop.get("options") or [] if isinstance(o, dict)]
        missing = [v for v in values.get(setting, ()) if options and v not in options]
        if missing:
            yield Finding(
                PROBLEM,
                f"{setting}={name}: the {noun} property {label!r} has no option "
                f"{', '.join(missing)} (its options: {', '.join(map(str, options))}): HubSpot "
                f"refuses those values; add them, or map the ratings to its options "
                "(HUBSPOT_WRITEBACK_LEAD_STATUSES)",
            )
            continue
        how = f" as {as_values[setting]}" if setting in as_values else ""
        yield Finding(
            OK,
            f"{setting}={name}: the {noun} property {label!r} ({kind}) exists; {what} are "
            f"written back to it{how} (the token needs {scopes.split(' and ')[-1]})",
        )


def _pipedrive(settings: Settings):
    """Pipedrive's settings, and its API token tried with one cheap read (``GET /users/me``,
    the token's own user): what /hooks/pipedrive and the daily reconciliation need."""
    if not settings.pipedrive_configured:
        yield Finding(
            OK,
            "Pipedrive is off (PIPEDRIVE_WEBHOOK_USER, PIPEDRIVE_WEBHOOK_PASSWORD and "
            "PIPEDRIVE_API_TOKEN unset)",
        )
        return
    assert settings.pipedrive_api_token is not None
    api = PipedriveApi(api_url=settings.pipedrive_api_url, token=settings.pipedrive_api_token)
    try:
        me = api.me()
    except PipedriveError as err:
        if err.status in (401, 403):
            yield Finding(
                PROBLEM,
                f"Pipedrive refused PIPEDRIVE_API_TOKEN ({err}): copy the API token again "
                "(Pipedrive: profile > Personal preferences > API), and check "
                f"PIPEDRIVE_API_URL={settings.pipedrive_api_url}",
            )
        else:
            yield Finding(
                WARNING,
                f"Pipedrive's API could not be read ({err}): its deliveries are stored and "
                "processed once it can",
            )
        return
    who = me.get("email") or me.get("name") or f"user {me.get('id')}"
    yield Finding(
        OK,
        f"PIPEDRIVE_API_TOKEN is valid: Pipedrive user {who}; webhooks at /hooks/pipedrive "
        "are taken with PIPEDRIVE_WEBHOOK_USER's basic auth",
    )
    yield from _pipedrive_writeback(settings, api)


def _pipedrive_writeback(settings: Settings, api: PipedriveApi):
    """Each write-back field looked for among the deal fields (``GET /dealFields``: a
    lead's custom fields are the deals'): one line each."""
    wanted = (
        ("PIPEDRIVE_WRITEBACK_REASON_FIELD", settings.pipedrive_writeback_reason_field),
        ("PIPEDRIVE_WRITEBACK_CATEGORY_FIELD", settings.pipedrive_writeback_category_field),
    )
    lead_wanted = (
        ("PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD", settings.pipedrive_writeback_lead_rating_field),
        ("PIPEDRIVE_WRITEBACK_LEAD_REASON_FIELD", settings.pipedrive_writeback_lead_reason_field),
    )
    if not any(key for _, key in wanted + lead_wanted):
        return  # write-back is off
    try:
        fields = api.deal_fields()
    except PipedriveError as err:
        yield Finding(WARNING, f"Pipedrive's deal fields could not be read ({err})")
        return
    for setting, key in wanted:
        if not key:
            continue
        found = fields.get(key)
        if found is None:
            yield Finding(
                PROBLEM,
                f"{setting}={key}: Pipedrive has no deal field with that key: create one "
                "(Company settings > Data fields > Deal, type Large text) and copy its API "
                "key; entries cannot be written back",
            )
            continue
        yield Finding(
            OK,
            f"{setting}: the deal field {found.get('name') or key!r} "
            f"({found.get('field_type') or '?'}) exists; entries are written back to it",
        )
    for setting, key in lead_wanted:
        if not key:
            continue
        found = fields.get(key)
        kind = (found or {}).get("field_type") or "?"
        if found is None or kind not in PIPEDRIVE_TEXT_FIELDS:
            what = (
                " has no custom deal field with that key"
                if found is None
                else (f"'s field {found.get('name') or key!r} is of type {kind}, not text")
            )
            yield Finding(
                PROBLEM,
                f"{setting}={key}: Pipedrive{what}: create a custom deal field (Company "
                "settings > Data fields > Deal, type Text; leads have the deals' custom "
                "fields) and copy its API key; lead ratings cannot be written back",
            )
            continue
        yield Finding(
            OK,
            f"{setting}: the custom field {found.get('name') or key!r} ({kind}) exists (leads "
            "have the deals' custom fields); lead ratings are written back to it",
        )


# Pipedrive's field types a rating's or a reason's text can be written to: Text, Large text,
# Autocomplete (a single option would want an option's id).
PIPEDRIVE_TEXT_FIELDS = ("varchar", "text", "varchar_auto")


def _salesforce(settings: Settings):
    """Salesforce calls us and is never called: its settings are all there is to check (the
    Slack IDs in SALESFORCE_OWNERS are checked with the other users)."""
    if not settings.salesforce_configured:
        yield Finding(
            OK, "Salesforce is off (SALESFORCE_ORG_ID and SALESFORCE_WEBHOOK_SECRET unset)"
        )
        return
    owners = len(settings.salesforce_owners)
    yield Finding(
        OK,
        f"Salesforce is on for organization {settings.salesforce_org_id}: a deal's owner is "
        f"read from its {settings.salesforce_owner_field} field"
        + (f", or from SALESFORCE_OWNERS ({owners} mapped)" if owners else ""),
    )


def _read(settings: Settings, call, missing: frozenset[str], label: str, **args):
    """Slack's answer to a read, or its error code; None when it cannot be checked because
    of a scope already reported missing. Raises _Unreachable."""
    try:
        return call(**args)
    except SlackApiError as err:
        code = err.response.get("error")
        if err.response.status_code != 200 or not code:
            raise _Unreachable(_http_error(settings, err)) from None
        if code == "missing_scope":
            needed = err.response.get("needed") or "?"
            if needed in missing:
                return None  # said once already, in the scopes' lines
            yield Finding(PROBLEM, f"{label}: not checked: scope {needed} is missing: {REINSTALL}")
            return None
        return code
    except SLACK_ERRORS as err:
        raise _Unreachable(_network_error(settings, err)) from None


# --- wording --------------------------------------------------------------------------


def _token_refused(code: str) -> str:
    if code in TOKEN_GONE:
        return (
            f"Slack refused SLACK_BOT_TOKEN ({code}): reinstall the app, then copy its new "
            "Bot User OAuth Token"
        )
    return (
        f"Slack refused SLACK_BOT_TOKEN ({code}): copy the Bot User OAuth Token again "
        "(OAuth & Permissions)"
    )


def _where(settings: Settings) -> str:
    url = settings.slack_api_url
    return f"SLACK_API_URL={url} (host {urlsplit(url).hostname})"


def _network_error(settings: Settings, err: BaseException) -> str:
    reason: object = err.reason if isinstance(err, URLError) else err
    if isinstance(reason, socket.gaierror):
        why = "the host name does not resolve (DNS)"
    elif isinstance(reason, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(reason, TimeoutError | socket.timeout):
        why = "no answer in time (timeout)"
    else:
        why = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return (
        f"network error: cannot reach Slack at {_where(settings)}: {why}; check the "
        "network, proxy or SLACK_API_URL"
    )


def _http_error(settings: Settings, err: SlackApiError) -> str:
    return (
        f"Slack at {_where(settings)} answered HTTP {err.response.status_code}, not the "
        "Web API: check SLACK_API_URL, or try again if Slack is having trouble"
    )


def _header(headers, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) else value
    return None

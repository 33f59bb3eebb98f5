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
from collections.abc import Callable, Iterator
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

from bot import checks_crm
from bot.config import Settings
from bot.config_values import USER_ID
from bot.finding import OK, PREFIX, PROBLEM, WARNING, Finding
from bot.slack import scopes as slack_scopes
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)


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
    yield from checks_crm.hubspot(settings)
    yield from checks_crm.pipedrive(settings)
    yield from checks_crm.salesforce(settings)


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

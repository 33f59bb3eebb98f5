"""Who is who, read from Slack: the sales and marketing teams, and people's profiles."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import Audience, Settings
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

USERS_LIST_PAGE = 200  # Slack's advice for users.list pages
USERS_LIST_MAX_PAGES = 1000  # 200,000 people

Profile = tuple[str | None, str | None]  # (time zone, display name)


class Directory:
    """Reads who is in sales and in marketing (the settings or a Slack user group), and
    people's profiles. Every method may raise one of ``SLACK_ERRORS``."""

    def __init__(self, client: WebClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._lock = threading.Lock()
        self._marketing: tuple[float, frozenset[str]] | None = None
        self._workspace_url: str | None = None

    def _members(self, audience: Audience) -> list[str]:
        if audience.usergroup is None:
            return list(audience.users)
        response = self._client.usergroups_users_list(usergroup=audience.usergroup)
        return list(response.get("users") or [])

    def group_members(self, usergroup: str) -> list[str]:
        """The members of any user group."""
        return list(self._client.usergroups_users_list(usergroup=usergroup).get("users") or [])

    def sales_ids(self) -> list[str]:
        """Current sales reps (usergroups.users.list is read on every call)."""
        return self._members(self._settings.sales)

    def marketing_ids(self, *, max_age: float = 0.0) -> frozenset[str]:
        """Marketing members, read from Slack now; ``max_age`` seconds lets a recent read
        stand in (a button click must open its modal within 3 seconds, so it uses one; an
        acknowledgement itself is always checked against a fresh read)."""
        with self._lock:
            cached = self._marketing
        if cached is not None and max_age > 0 and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        members = frozenset(self._members(self._settings.marketing))
        with self._lock:
            self._marketing = (time.monotonic(), members)
        return members

    def profile(self, user_id: str) -> Profile:
        """(tz, display name) from users.info; tz None when Slack has none."""
        return _profile_of(self._client.users_info(user=user_id)["user"])

    def profiles(self, user_ids: Collection[str], into: dict[str, Profile]) -> None:
        """Put (tz, display name) of each of ``user_ids`` that users.list has into ``into``,
        read a page of USERS_LIST_PAGE at a time and no further than needed. What was read
        before a failure stays in ``into``; a cursor seen before, or more than
        USERS_LIST_MAX_PAGES pages, ends the reading."""
        wanted: set[str] = set(user_ids)
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(USERS_LIST_MAX_PAGES):
            page = self._client.users_list(limit=USERS_LIST_PAGE, cursor=cursor)
            for user in page.get("members") or []:
                if user.get("id") in wanted:
                    into[user["id"]] = _profile_of(user)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor or cursor in seen or not wanted - into.keys():
                return
            seen.add(cursor)
        log.warning("users.list: stopped after %d pages", USERS_LIST_MAX_PAGES)

    def active_user(self, *, user_id: str | None, email: str | None) -> str | None:
        """The Slack user ID of an active, human user found by ID or email; None when Slack
        has no such person."""
        try:
            if user_id is not None:
                user = self._client.users_info(user=user_id)["user"]
            elif email:
                user = self._client.users_lookupByEmail(email=email)["user"]
            else:
                return None
        except SlackApiError as err:
            if err.response.get("error") in ("users_not_found", "user_not_found"):
                return None
            raise
        if user.get("deleted") or user.get("is_bot"):
            return None
        return user["id"]

    def workspace_url(self) -> str:
        """The workspace's URL (auth.test, read once), for links to messages; "" when Slack
        cannot say now."""
        if self._workspace_url is None:
            try:
                self._workspace_url = self._client.auth_test().get("url") or ""
            except SLACK_ERRORS:
                log.warning("auth.test failed; messages go without links this time")
                return ""
        return self._workspace_url


def _profile_of(user: dict) -> Profile:
    name = (user.get("profile") or {}).get("display_name") or user.get("real_name")
    return user.get("tz"), name or user.get("name")

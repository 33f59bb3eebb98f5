"""Looking in Slack for a message Closeloop may already have sent.

A send whose answer was lost (a timeout, a dropped connection, a process killed mid-call)
may or may not have reached Slack. Every message the outbox sends carries its outbox id in
its metadata, so before sending again the outbox reads what the channel (or the thread)
received since the first attempt, page by page, and records the message it finds instead
of posting a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from slack_sdk import WebClient

PAGE = 200  # Slack's advice for a page of history (it may answer with fewer)
MAX_PAGES = 50  # 10,000 messages since the first attempt at most


class TooMuchHistory(Exception):
    """The bound was reached before the start of the window: the answer is unknown."""


def find(
    client: WebClient,
    *,
    channel: str,
    match: Callable[[dict], bool],
    oldest: str | None,
    thread_ts: str | None = None,
    max_pages: int = MAX_PAGES,
) -> dict | None:
    """The first message of ``channel`` (or of the thread ``thread_ts``) posted after
    ``oldest`` (a Slack ts; None: the whole history) for which ``match`` is true, with its
    ``channel`` set; None when there is none. A user ID as ``channel`` means the bot's DM
    with that person.

    Raises one of ``SLACK_ERRORS`` when Slack cannot be read, :class:`TooMuchHistory` when
    more than ``max_pages`` pages would be needed."""
    if channel.startswith(("U", "W")):
        channel = client.conversations_open(users=channel)["channel"]["id"]
    args: dict = {"channel": channel, "limit": PAGE, "include_all_metadata": True}
    if oldest:
        args["oldest"] = oldest
    if thread_ts:  # a thread's replies are not in the channel's history
        pages = _pages(client.conversations_replies, {**args, "ts": thread_ts}, max_pages)
    else:
        pages = _pages(client.conversations_history, args, max_pages)
    for page in pages:
        for message in page:
            if match(message):
                return {**message, "channel": channel}
    return None


def marked(event_type: str, key: str, value: object) -> Callable[[dict], bool]:
    """A ``match`` for the message whose metadata is ``{event_type, {key: value}}``."""

    def match(message: dict) -> bool:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        return metadata.get("event_type") == event_type and payload.get(key) == value

    return match


def _pages(read: Callable[..., Any], args: dict, max_pages: int) -> Iterator[list[dict]]:
    """The messages of each page ``read`` returns, following the cursor, at most
    ``max_pages`` pages (then :class:`TooMuchHistory`)."""
    cursor = None
    for _ in range(max_pages):
        page = read(**args, cursor=cursor) if cursor else read(**args)
        yield page.get("messages") or []
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return
    raise TooMuchHistory(f"more than {max_pages} pages of history in {args['channel']}")

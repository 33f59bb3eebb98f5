"""``closeloop forget-user``: forget one person in the database (services.privacy), then take
them out of what Closeloop posted in channels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.blocks import feedback as fb_blocks
from bot.db import session_scope
from bot.models import Acknowledgement
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import privacy as privacy_svc
from bot.services.privacy import Forgotten

log = logging.getLogger(__name__)


@dataclass
class Report:
    forgotten: Forgotten
    posts_updated: int = 0
    posts_failed: int = 0  # left marked; the running bot retries them every minute
    replies_updated: int = 0
    replies_failed: list[tuple[str, str]] = field(default_factory=list)  # (channel, ts)


def roster_conflicts(rt: Runtime, user_id: str) -> tuple[list[str], list[str]]:
    """(settings or groups still naming ``user_id``, groups that could not be read).

    Forgetting someone who is still in the sales team would bring them back at the next
    roster sync, and a manager or admin keeps rights through the settings: the operator
    removes them there first.
    """
    s = rt.settings
    named = [
        name
        for name, ids in (
            ("SALES_USERS", s.sales.users),
            ("MARKETING_USERS", s.marketing.users),
            ("SALES_MANAGERS", s.sales_managers),
            ("ADMIN_USERS", s.admin_users),
        )
        if user_id in ids
    ]
    unread = []
    for name, group in (
        ("SALES_USERGROUP", s.sales.usergroup),
        ("MARKETING_USERGROUP", s.marketing.usergroup),
    ):
        if group is None:
            continue
        try:
            members = rt.client.usergroups_users_list(usergroup=group).get("users") or []
        except SLACK_ERRORS:
            log.exception("could not read %s (%s)", name, group)
            unread.append(f"{name} ({group})")
            continue
        if user_id in members:
            named.append(f"{name} ({group})")
    return named, unread


def forget_user(rt: Runtime, *, user_id: str) -> Report:
    """Forget ``user_id`` (committed first), then re-render the channel posts and thread
    replies that showed them. A post Slack refuses now stays marked for the bot's retry."""
    with session_scope(rt.session_factory) as session:
        forgotten = privacy_svc.forget(
            session, user_id=user_id, pseudonym=privacy_svc.new_pseudonym(), now=rt.now()
        )
    report = Report(forgotten=forgotten)
    if forgotten.footprint.empty:
        return report
    log.info("forgot %s (the pseudonym is not logged)", user_id)
    from bot.flows import home, publish_post

    for post_id in forgotten.post_ids:
        if publish_post(rt, post_id):
            report.posts_updated += 1
        else:
            report.posts_failed += 1
    for ack_id in forgotten.ack_ids:
        with session_scope(rt.session_factory) as session:
            ack = session.get(Acknowledgement, ack_id)
            assert ack is not None
            emoji = ack.dedup_key.rsplit(":", 1)[-1] if ack.dedup_key else None
            text, blocks = fb_blocks.ack_thread_reply(
                marketer_id=ack.user_id, note=ack.note, emoji=emoji
            )
            channel, ts = ack.post.channel, ack.thread_ts or ""
        if rt.update(channel=channel, ts=ts, text=text, blocks=blocks):
            report.replies_updated += 1
        else:
            report.replies_failed.append((channel, ts))
    try:
        home.changed(rt, marketing=True)  # their posts leave marketing's queue
    except SLACK_ERRORS:
        log.exception("could not refresh marketing's Home tabs")
    return report

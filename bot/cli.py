"""The operator's commands (``closeloop ...``, parsed in bot.__main__): prompt, tick,
deal-closed, competitors, digest, crm sync, definition, forget-user (import and export are in
bot.cli_data)."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select

from bot.blocks import digest as digest_blocks
from bot.db import session_scope
from bot.intake import deliveries as crm_deliveries
from bot.jobs import deals as deal_jobs
from bot.jobs import digest as digest_jobs
from bot.jobs.prompts import preview_prompts, queue_due_prompts
from bot.jobs.roster import RosterSync
from bot.models import OutboxMessage, OutboxState
from bot.runtime import Runtime
from bot.services import competitors as competitor_svc
from bot.services import definition as definition_svc
from bot.services import privacy as privacy_svc
from bot.services.deal_input import InvalidField, parse_deal
from bot.services.digest import Month
from bot.services.errors import DomainError
from bot.slack.client import SLACK_ERRORS

SHOWN_SHORTHAND = 20  # shorthand reasons listed one by one; the rest are counted
T = TypeVar("T")
QUEUED_NOTE = "the running bot (it holds the scheduler role) sends it within seconds"


def fail(message: str, code: int = 1) -> int:
    print(f"closeloop: {message}", file=sys.stderr)
    return code


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def prompt_now(rt: Runtime, users: list[str] | None) -> int:
    """``closeloop prompt --now [--user ...]``: this week's prompt, now, once per rep."""
    sends = not rt.outbox.stopped
    try:
        result = queue_due_prompts(rt, RosterSync(rt), only_users=users, force=True, send=sends)
    except SLACK_ERRORS as err:
        print(f"closeloop: Slack refused the request: {first_line(err)}", file=sys.stderr)
        return 1
    for user in result.not_sales:
        print(f"{user}: not in the sales team (SALES_USERS / SALES_USERGROUP); not prompted")
    for user in result.already:
        print(f"{user}: already prompted this week")
    for user in result.sent:
        print(f"{user}: prompted")
    for user in result.queued:
        print(f"{user}: queued; " + ("Slack failed, it is retried" if sends else QUEUED_NOTE))
    for user in result.failed:
        print(f"{user}: Slack refused the DM (see the log); not prompted")
    print(
        f"{len(result.sent)} prompted, {len(result.queued)} queued, {len(result.already)} "
        f"already had this week's prompt, {len(result.failed)} failed"
    )
    return 1 if result.failed else 0


def prompt_dry_run(rt: Runtime, users: list[str] | None) -> int:
    """``closeloop prompt --now --dry-run``: who would get this week's prompt, for which
    week in their time zone; nothing is stored, queued or sent (Slack is only read)."""
    try:
        preview = preview_prompts(rt, only_users=users)
    except SLACK_ERRORS as err:
        print(f"closeloop: Slack refused the request: {first_line(err)}", file=sys.stderr)
        return 1
    for user in preview.not_sales:
        print(f"{user}: not in the sales team (SALES_USERS / SALES_USERGROUP); not prompted")
    for user in preview.already:
        print(f"{user}: already prompted this week; would not be prompted again")
    for due in preview.would_prompt:
        print(f"{due.user_id}: would get the prompt for the week of {due.week_start} ({due.tz})")
    print(
        f"dry run: {len(preview.would_prompt)} would be prompted, {len(preview.already)} "
        "already had this week's prompt; nothing was sent"
    )
    return 0


def deal_closed(rt: Runtime, args: Namespace) -> int:
    """Store a closed deal and nudge its owner, exactly like POST /hooks/deal-closed."""
    if args.json:
        try:
            text = sys.stdin.read() if args.json == "-" else Path(args.json).read_text("utf-8")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return fail(f"cannot read the deal JSON: {err}", 2)
    else:
        data = {
            key: value
            for key, value in {
                "deal_id": args.deal_id,
                "name": args.name,
                "outcome": args.outcome,
                "closed_at": args.closed_at,
                "owner_email": args.owner_email,
                "owner_slack_id": args.owner_slack_id,
                "amount": args.amount,
                "source": args.source,
            }.items()
            if value is not None
        }
    try:
        deal = parse_deal(data, now=rt.now())
    except InvalidField as err:
        return fail(f"bad deal: {err}", 2)
    deal_pk, created = deal_jobs.receive_deal(rt, deal)
    if not created:
        print(f"deal {deal.external_id}: already known; nothing changed")
        return 0
    deal_jobs.process_deal(rt, deal_pk)
    if rt.outbox.stopped:
        print(f"deal {deal.external_id}: stored; the running bot asks the owner for the entry")
        return 0
    rt.outbox.drain()
    if deal_jobs.nudge_sent(rt, deal_pk):
        print(f"deal {deal.external_id}: stored; owner asked for the win/loss entry")
    else:
        print(f"deal {deal.external_id}: stored; the owner's nudge is queued and retried")
    return 0


def crm_sync(rt: Runtime, args: Namespace) -> int:
    """``closeloop crm sync --since DAY [--source CRM]``: each CRM's deals closed since DAY
    (UTC) taken in, once; a line a CRM; exit 1 when one could not be read."""
    since = datetime.combine(args.since, time(0), tzinfo=UTC)
    results = crm_deliveries.sync(rt, since=since, sources=[args.source] if args.source else None)
    failed = False
    for r in results:
        if r.skipped:
            print(f"{r.source}: not configured, skipped ({r.skipped})")
        elif r.error:
            failed = True
            fail(f"{r.source}: stopped after {r.found} closed deals ({r.new} new): {r.error}")
        else:
            print(f"{r.source}: found {r.found} closed deals since {args.since}, {r.new} new")
    rt.after_ack.drain()  # the sends the processing asked for (as after a webhook's answer)
    if not rt.outbox.stopped:
        rt.outbox.drain()  # the owners' nudges, unless the running bot sends them
    return 1 if failed else 0


def competitors(rt: Runtime, args: Namespace) -> int:
    with session_scope(rt.session_factory) as session:
        if args.action == "list":
            for competitor in competitor_svc.known(session, limit=10_000):
                print(competitor.name)
            return 0
        try:
            if args.action == "rename":
                former, renamed = competitor_svc.rename(session, old=args.old, new=args.new)
                print(f"renamed {former!r} to {renamed.name!r}")
                return 0
            src, dst, moved = competitor_svc.merge(session, source=args.source, target=args.target)
        except DomainError as err:
            return fail(str(err), 1)
        print(f"merged {src.name!r} into {dst.name!r}: {moved} entries moved")
    return 0


def digest(rt: Runtime, args: Namespace) -> int:
    """Print the digest (text or JSON) without Slack, or post it now (once per month)."""
    try:
        month = Month.parse(args.month) if args.month else digest_jobs.default_month(rt)
    except DomainError as err:
        return fail(str(err), 2)
    if args.post and getattr(args, "dry_run", False):
        return _digest_dry_run(rt, month)
    if args.post:
        if not digest_jobs.queue(rt, month):
            print(f"the {month} digest was already posted (or is being posted); not posted again")
            return 0
        if rt.outbox.stopped:
            print(f"queued the {month} digest for {rt.settings.digest_channel}; {QUEUED_NOTE}")
            return 0
        rt.outbox.drain()
        ts = digest_jobs.posted_ts(rt, month)
        if ts is None:
            print(f"queued the {month} digest; Slack failed, it is retried", file=sys.stderr)
            return 1
        print(f"posted the {month} digest to {rt.settings.digest_channel} (ts {ts})")
        return 0
    figures = digest_jobs.figures(rt, month)
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True, default=str))
    else:
        print(digest_blocks.digest_text(figures), end="")
    return 0


def _digest_dry_run(rt: Runtime, month: Month) -> int:
    """``closeloop digest --post --dry-run``: where the digest would go and what it would
    say; nothing is stored, queued or sent."""
    channel = rt.settings.digest_channel
    if digest_jobs.queued_before(rt, month):
        print(
            f"dry run: the {month} digest was already posted (or is being posted); "
            "it would not be posted again; nothing was sent"
        )
        return 0
    print(
        f"dry run: would post the {month} digest to {channel}, its chart in the thread; "
        "nothing was sent. It would say:"
    )
    print(digest_blocks.digest_text(digest_jobs.figures(rt, month)), end="")
    return 0


def definition(rt: Runtime, args: Namespace) -> int:
    """``closeloop definition set FILE | show [--version N] | history``."""
    if args.action == "set":
        return _definition_set(rt, args)
    with session_scope(rt.session_factory) as session:
        if args.action == "history":
            rows = definition_svc.history(session, limit=10_000)
            if not rows:
                print("no definition of a qualified lead yet (closeloop definition set FILE)")
            for d in rows:
                who = d.author or "operator"
                note = " ".join((d.note or "").split())
                print(f"version {d.version}  {d.created_at:%Y-%m-%d %H:%M} UTC  {who}  {note}")
            return 0
        try:
            found = (
                definition_svc.get(session, args.version)
                if args.version is not None
                else definition_svc.current(session)
            )
        except DomainError as err:
            return fail(str(err))
        if found is None:
            print(
                "closeloop: no definition yet; below is a template to fill in and load with "
                "`closeloop definition set FILE`",
                file=sys.stderr,
            )
        print(definition_svc.render_markdown(found), end="")
    return 0


def _definition_set(rt: Runtime, args: Namespace) -> int:
    path = Path(args.file)
    try:
        text = sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return fail(f"cannot read {args.file}: {first_line(err)}", 2)
    try:
        summary, sections = definition_svc.parse_markdown(text)
        with session_scope(rt.session_factory) as session:
            saved = definition_svc.save(
                session,
                summary=summary,
                sections=sections,
                note=args.note or f"Loaded from {path.name}",
                author=args.author,
                now=rt.now(),
                settings=rt.settings,
                operator=True,
            )
            version = saved.version
    except DomainError as err:
        return fail(f"{args.file}: {err}")
    channels = ", ".join(definition_svc.notice_channels(rt.settings))
    print(f"saved version {version} of the definition of a qualified lead")
    if rt.outbox.stopped:
        print(f"queued the notice for {channels}; {QUEUED_NOTE}")
        return 0
    rt.outbox.drain()
    with session_scope(rt.session_factory) as session:
        waiting = session.scalar(
            select(OutboxMessage.id).where(
                OutboxMessage.key.like(f"definition-changed:{version}:%"),
                OutboxMessage.state != OutboxState.SENT,
            )
        )
    if waiting is not None:
        print(f"{channels} not told yet: Slack failed, it is retried", file=sys.stderr)
        return 1
    print(f"told {channels}")
    return 0


STILL_IN_SLACK = (
    "Still in Slack, out of Closeloop's reach: the DMs between Closeloop and {user} (prompts, "
    "their replies, confirmations, win/loss nudges), the DMs that told reps about {user}'s "
    "acknowledgements, escalations already posted to the sales managers, monthly digests "
    "already posted, and anything people wrote themselves. "
    "A workspace admin can delete those in Slack; logs and backups follow their own retention."
)


def _footprint_lines(found) -> list[str]:
    """What forget-user will do, one line per kind of data found."""
    n = found
    lines = [
        (n.member, "their member record (Slack name, time zone): deleted"),
        (n.prompts, f"{n.prompts} weekly prompt(s): kept for the response rates, pseudonymised"),
        (
            n.answers,
            f"{n.answers} feedback answer(s): kept for the counts, the text they wrote deleted",
        ),
        (
            n.posts,
            f"{n.posts} channel post(s) of theirs: pseudonymised, re-rendered without them, "
            "no longer open to acknowledgement",
        ),
        (
            n.acknowledgements,
            f"{n.acknowledgements} acknowledgement(s) they made: kept for the acknowledged "
            f"rate, pseudonymised, {n.notes} note(s) deleted",
        ),
        (
            n.deals_logged,
            f"{n.deals_logged} deal(s) of theirs with an entry: kept, owner pseudonymised, "
            "email removed",
        ),
        (
            n.deals_waiting,
            f"{n.deals_waiting} deal(s) of theirs still waiting for an entry: owner removed; "
            "the sales managers are told",
        ),
        (
            n.entries,
            f"{n.entries} win/loss entr(y/ies) they wrote: kept (the customer's words belong "
            "to the deal), author unlinked",
        ),
        (n.revisions, f"{n.revisions} entry revision(s) they made: kept, unlinked"),
        (
            n.leads_owned,
            f"{n.leads_owned} lead(s) of theirs, rated or imported: kept, owner pseudonymised, "
            "email removed; the prospect's own details untouched",
        ),
        (
            n.leads_waiting,
            f"{n.leads_waiting} lead(s) of theirs waiting for a rating: owner removed; the "
            "sales managers are told",
        ),
        (n.leads_handed, f"{n.leads_handed} lead(s) they handed to sales: kept, pseudonymised"),
        (n.ratings, f"{n.ratings} lead rating(s) they made: kept, pseudonymised"),
        (
            n.definitions,
            f"{n.definitions} lead definition version(s) or review(s) of theirs: kept, "
            "pseudonymised",
        ),
        (
            n.mentions,
            f"{n.mentions} other record(s) naming their user ID or email: the mention replaced",
        ),
        (
            n.events,
            f"{n.events} stored Slack event(s) sent by them or naming them: theirs deleted "
            "(never processed), the mention replaced in others'",
        ),
    ]
    return [f"  {text}" for present, text in lines if present]


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
            ("DEFINITION_OWNERS", s.leads.definition_owners),
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
            members = rt.directory.group_members(group)
        except SLACK_ERRORS:
            unread.append(f"{name} ({group})")
            continue
        if user_id in members:
            named.append(f"{name} ({group})")
    return named, unread


def forget_user(rt: Runtime, args: Namespace) -> int:
    """Forget one person: delete what they wrote, pseudonymise the rest, keep the counts,
    and edit what Closeloop posted about them in Slack (through the outbox)."""
    user_id = args.user_id.strip()
    if not privacy_svc.USER_ID.match(user_id):
        return fail(f"{user_id!r} is not a Slack user ID (U… or W…); nothing changed", 2)
    named, unread = roster_conflicts(rt, user_id)
    if named:
        return fail(
            f"{user_id} is still in {', '.join(named)}; remove them there first (or Closeloop "
            "meets them again); nothing changed",
            2,
        )
    for group in unread:
        print(
            f"closeloop: warning: could not read {group} from Slack; if {user_id} is still in "
            "it, the next roster sync brings them back",
            file=sys.stderr,
        )
    with session_scope(rt.session_factory) as session:
        found = privacy_svc.footprint(session, user_id=user_id)
    if found.empty:
        return fail(
            f"Closeloop holds nothing about {user_id} (never seen here, or already forgotten); "
            "nothing changed",
            1,
        )
    print(f"{user_id}: what Closeloop holds, and what forgetting does with it")
    print("\n".join(_footprint_lines(found)))
    if not args.yes:
        try:
            answer = input(f"Forget {user_id}? This cannot be undone. [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    with session_scope(rt.session_factory) as session:
        forgotten = privacy_svc.forget(
            session, user_id=user_id, pseudonym=privacy_svc.new_pseudonym(), now=rt.now()
        )
    print(f'forgot {user_id}: Closeloop names them "a former colleague" from now on')
    edits = [f"post-edit:{p}" for p in forgotten.post_ids] + [
        f"ack-reply-edit:{a}" for a in forgotten.ack_ids
    ]
    if edits and not rt.outbox.stopped:
        rt.outbox.drain()
    if edits:
        with session_scope(rt.session_factory) as session:
            states = [
                state
                for (state,) in session.execute(
                    select(OutboxMessage.state).where(OutboxMessage.key.in_(edits))
                )
            ]
        done = sum(state == OutboxState.SENT for state in states)
        failed = sum(state == OutboxState.FAILED for state in states)
        waiting = len(states) - done - failed
        parts = [f"{done} message(s) edited without them"]
        if waiting:
            parts.append(
                f"{waiting} edit(s) queued ("
                + ("Slack failed, they are retried" if not rt.outbox.stopped else QUEUED_NOTE)
                + ")"
            )
        print("Slack: " + ", ".join(parts))
        if failed:
            print(
                f"closeloop: warning: Slack refused {failed} edit(s) for good (see the log); "
                "delete those messages in Slack",
                file=sys.stderr,
            )
    if forgotten.waiting_deals:
        print(
            "now without an owner (the sales managers are told on the next tick): "
            + ", ".join(forgotten.waiting_deals)
        )
    if forgotten.waiting_leads:
        print(
            "leads now without an owner (the sales managers are told on the next tick): "
            + ", ".join(forgotten.waiting_leads)
        )
    print(STILL_IN_SLACK.format(user=user_id))
    return 0

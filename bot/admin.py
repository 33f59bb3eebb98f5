"""The operator's commands: deal-closed, import, export, competitors, digest, forget-user
(see bot.__main__)."""

from __future__ import annotations

import csv
import json
import sys
from argparse import Namespace
from pathlib import Path

from bot.db import session_scope
from bot.flows import outbox as outbox_flow
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import DomainError, csvio
from bot.services import competitors as competitor_svc
from bot.services.winloss import InvalidField, parse_deal


def _fail(message: str, code: int = 1) -> int:
    print(f"closeloop: {message}", file=sys.stderr)
    return code


def deal_closed(rt: Runtime, args: Namespace, *, sends: bool = True) -> int:
    """Store a closed deal and nudge its owner, exactly like POST /hooks/deal-closed."""
    from bot.flows import winloss as wl_flows

    if args.json:
        try:
            text = sys.stdin.read() if args.json == "-" else Path(args.json).read_text("utf-8")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return _fail(f"cannot read the deal JSON: {err}", 2)
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
        deal = parse_deal(data)
    except InvalidField as err:
        return _fail(f"bad deal: {err}", 2)
    deal_pk, created = wl_flows.receive_deal(rt, deal)
    if not created:
        print(f"deal {deal.external_id}: already known; nothing changed")
        return 0
    try:
        wl_flows.process_deal(rt, deal_pk)
    except SLACK_ERRORS as err:
        print(
            f"deal {deal.external_id}: stored; Slack failed ({err}); the bot will retry the nudge"
        )
        return 0
    if not sends:
        print(f"deal {deal.external_id}: stored; the running bot asks the owner for the entry")
        return 0
    outbox_flow.drain(rt)
    if wl_flows.nudge_sent(rt, deal_pk):
        print(f"deal {deal.external_id}: stored; owner asked for the win/loss entry")
    else:
        print(f"deal {deal.external_id}: stored; the owner's nudge is queued and retried")
    return 0


def import_(rt: Runtime, args: Namespace) -> int:
    try:
        stream = open(args.file, encoding="utf-8-sig", newline="")
    except OSError as err:
        return _fail(f"cannot open {args.file}: {err.strerror}", 2)
    with stream:
        try:
            rows, rejected = csvio.read_winloss(stream, categories=rt.settings.reason_categories)
        except (DomainError, UnicodeDecodeError, csv.Error) as err:
            return _fail(f"{args.file}: {err}", 2)
    total = len(rows) + len(rejected)
    print(f"checked {total} rows: {len(rows)} good, {len(rejected)} rejected", file=sys.stderr)
    for bad in rejected:
        print(f"{args.file}:{bad.line}: rejected: {bad.why}", file=sys.stderr)
    if rejected and not args.skip_bad:
        return _fail(f"nothing imported: {len(rejected)} bad row(s); fix them or use --skip-bad", 1)

    def progress(done: int) -> None:
        print(f"imported {done}/{len(rows)} rows", file=sys.stderr)

    with session_scope(rt.session_factory) as session:
        result = csvio.import_winloss(
            session,
            rows,
            deadline_hours=rt.settings.winloss_deadline_hours,
            now=rt.now(),
            progress=progress,
        )
    print(
        f"imported {len(rows)} rows: {result.new} new, {result.updated} updated, "
        f"{result.unchanged} unchanged" + (f"; {len(rejected)} skipped" if rejected else "")
    )
    return 0


def export(rt: Runtime, args: Namespace) -> int:
    columns, rows = (
        (csvio.WINLOSS_COLUMNS, csvio.winloss_rows)
        if args.kind == "winloss"
        else (csvio.FEEDBACK_COLUMNS, csvio.feedback_rows)
    )
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        with session_scope(rt.session_factory) as session:
            count = csvio.write_csv(out, columns, rows(session, since=args.since))
    finally:
        if args.output:
            out.close()
    print(f"exported {count} rows", file=sys.stderr)
    return 0


def competitors(rt: Runtime, args: Namespace) -> int:
    with session_scope(rt.session_factory) as session:
        if args.action == "list":
            for competitor in competitor_svc.known(session, limit=10_000):
                print(competitor.name)
            return 0
        try:
            src, dst, moved = competitor_svc.merge(session, source=args.source, target=args.target)
        except DomainError as err:
            return _fail(str(err), 1)
        print(f"merged {src.name!r} into {dst.name!r}: {moved} entries moved")
    return 0


def digest(rt: Runtime, args: Namespace) -> int:
    """Print the digest (text or JSON) without Slack, or post it now (once per month)."""
    from bot.blocks import digest as digest_blocks
    from bot.flows import digest as digest_flows
    from bot.services.digest import Month

    try:
        month = Month.parse(args.month) if args.month else digest_flows.default_month(rt)
    except DomainError as err:
        return _fail(str(err), 2)
    if args.post:
        ts = digest_flows.post(rt, month)
        if ts is None:
            print(f"the {month} digest was already posted (or is being posted); not posted again")
            return 0
        print(f"posted the {month} digest to {rt.settings.digest_channel} (ts {ts})")
        return 0
    figures = digest_flows.figures(rt, month)
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True, default=str))
    else:
        print(digest_blocks.digest_text(figures), end="")
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


def forget_user(rt: Runtime, args: Namespace) -> int:
    """Forget one person: delete what they wrote, pseudonymise the rest, keep the counts."""
    from bot.flows import privacy as privacy_flows
    from bot.services import privacy as privacy_svc

    user_id = args.user_id.strip()
    if not privacy_svc.USER_ID.match(user_id):
        return _fail(f"{user_id!r} is not a Slack user ID (U… or W…); nothing changed", 2)
    named, unread = privacy_flows.roster_conflicts(rt, user_id)
    if named:
        return _fail(
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
        return _fail(
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
    report = privacy_flows.forget_user(rt, user_id=user_id)
    print(f'forgot {user_id}: Closeloop names them "a former colleague" from now on')
    done = [f"{report.posts_updated} channel post(s) re-rendered without them"]
    if report.replies_updated:
        done.append(f"{report.replies_updated} thread reply(ies) edited")
    print("Slack: " + ", ".join(done))
    if report.posts_failed:
        print(
            f"closeloop: warning: Slack refused {report.posts_failed} post update(s) now; the "
            "running bot retries them every minute",
            file=sys.stderr,
        )
    for channel, ts in report.replies_failed:
        print(
            f"closeloop: warning: could not edit the thread reply {ts} in {channel}; "
            "delete it in Slack",
            file=sys.stderr,
        )
    if report.forgotten.waiting_deals:
        print(
            "now without an owner (the sales managers are told on the next tick): "
            + ", ".join(report.forgotten.waiting_deals)
        )
    print(STILL_IN_SLACK.format(user=user_id))
    return 0

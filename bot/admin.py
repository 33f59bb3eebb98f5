"""The operator's commands: deal-closed, import, export, competitors (see bot.__main__)."""

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

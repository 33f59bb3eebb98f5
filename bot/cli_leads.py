"""``closeloop leads ...``: the lead hand-off loop's operator commands. Each action is a
subcommand of ``leads`` (``report`` now; ``export`` and ``import`` fit beside it): its
arguments in :func:`add_parser`, whether it needs Slack in :func:`database_only`, its body
dispatched by :func:`main`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from bot.blocks import lead_report as report_blocks
from bot.cli import QUEUED_NOTE, fail
from bot.jobs import lead_report as report_jobs
from bot.runtime import Runtime
from bot.services.errors import DomainError
from bot.services.lead_report import IsoWeek


def add_parser(sub, command: Callable[..., argparse.ArgumentParser], parser_class) -> None:
    """Add ``leads`` and its actions to the subcommands ``sub`` (``command`` makes a
    subcommand with its help and examples, as bot.__main__ does for every other one)."""
    leads = command(
        sub,
        "leads",
        "the lead hand-off loop: the Monday report (printing it is database only)",
        "  closeloop leads report                     # last week's report, printed\n"
        "  closeloop leads report --week 2026-W49     # that ISO week's\n"
        "  closeloop leads report --week 2026-W49 --json\n"
        "  closeloop leads report --post              # post last week's now (once a week)",
    )
    actions = leads.add_subparsers(dest="action", required=True, parser_class=parser_class)
    report = actions.add_parser(
        "report",
        help="last week's leads by source, campaign and rep: print, JSON, or post",
        description="The Monday report: a week's leads by source and campaign (handed over, "
        "accepted, not ready, rejected by reason, no response), rejection rate per source, "
        "SLA compliance and time to first response by source and rep, the definition in "
        "force.",
        epilog="examples:\n"
        "  closeloop leads report --week 2026-W49          # print it\n"
        "  closeloop leads report --week 2026-W49 --json   # its figures as JSON\n"
        "  closeloop leads report --post                   # post last week's to "
        "LEAD_REPORT_CHANNEL",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "--week", help="an ISO week, YYYY-Www (default: last week, in LEAD_REPORT_TIMEZONE)"
    )
    how = report.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print the figures as JSON")
    how.add_argument(
        "--post", action="store_true", help="post it to LEAD_REPORT_CHANNEL now (once a week)"
    )


def database_only(args: argparse.Namespace) -> bool:
    """Whether the action needs just DATABASE_URL (no Slack settings)."""
    if args.action == "report":
        return not args.post
    return True


def main(rt: Runtime, args: argparse.Namespace, *, with_role: Callable) -> int:
    """Run ``closeloop leads <action>``; ``with_role(fn)`` runs ``fn`` as a command that
    may send the outbox (bot.__main__._with_role)."""
    if args.action == "report":
        if args.post:
            return with_role(lambda: report(rt, args))
        return report(rt, args)
    raise AssertionError(f"unknown leads action {args.action!r}")  # argparse allows no other


def report(rt: Runtime, args: argparse.Namespace) -> int:
    """Print the report (text or JSON) without Slack, or post it now (once per week)."""
    try:
        week = IsoWeek.parse(args.week) if args.week else report_jobs.default_week(rt)
    except DomainError as err:
        return fail(str(err), 2)
    if args.post:
        channel = report_jobs.channel_of(rt)
        if not report_jobs.queue(rt, week):
            print(f"the {week} lead report was already posted (or is being posted); not again")
            return 0
        if rt.outbox.stopped:
            print(f"queued the {week} lead report for {channel}; {QUEUED_NOTE}")
            return 0
        rt.outbox.drain()
        ts = report_jobs.posted_ts(rt, week)
        if ts is None:
            return fail(f"queued the {week} lead report; Slack failed, it is retried")
        print(f"posted the {week} lead report to {channel} (ts {ts})")
        return 0
    figures = report_jobs.figures(rt, week)
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True, default=str))
    else:
        print(report_blocks.report_text(figures), end="")
    return 0

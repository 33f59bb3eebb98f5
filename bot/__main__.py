"""The ``closeloop`` command (the same as ``python -m bot``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from importlib import metadata
from typing import NoReturn

from dotenv import load_dotenv
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.error import BoltError

from bot import checks, cli, cli_data, cli_leads, db, logs, migrate
from bot.app import create_app
from bot.config import (
    SECRET_SETTINGS,
    ConfigError,
    Settings,
    web_concurrency,
    web_threads,
)
from bot.config_values import USER_ID
from bot.event_inbox import EventInbox
from bot.intake.deliveries import LISTERS
from bot.jobs.tick import Tick
from bot.leader import role_if_free
from bot.runtime import Runtime
from bot.scheduler import role as scheduler_role
from bot.server import make_http_server, make_wsgi_app
from bot.slack.client import SLACK_ERRORS


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other problem ``closeloop`` reports."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"closeloop: {message} (see: {self.prog} --help)\n")


def _command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="closeloop",
        description=__doc__,
        epilog="Each command's --help has examples. Commands marked (database only) need just "
        "DATABASE_URL; the others read the Slack settings too.",
    )
    parser.add_argument("--version", action="version", version=f"closeloop {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = _command(
        sub,
        "run",
        "upgrade the database, check the Slack settings and start the bot",
        "  closeloop run                  # Socket Mode or HTTP, as .env says\n"
        "  closeloop run --no-scheduler   # one more process answering Slack",
    )
    run.add_argument("--no-scheduler", action="store_true", help="serve Slack only")
    _command(
        sub,
        "migrate",
        "upgrade the database to the newest schema (database only)",
        "  DATABASE_URL=postgresql://closeloop@db/closeloop closeloop migrate",
    )
    _command(
        sub,
        "check",
        "verify the settings against Slack: token, scopes, channels, groups, users",
        "  closeloop check                # one line a finding; exit 1 on a problem",
    )
    _command(
        sub,
        "scheduler",
        "run only the scheduler role (for a separate process)",
        "  closeloop scheduler            # beside web processes run with --no-scheduler",
    )
    prompt = _command(
        sub,
        "prompt",
        "send this week's feedback prompt",
        "  closeloop prompt --now --dry-run          # who would be asked; nothing is sent\n"
        "  closeloop prompt --now                    # every rep not yet asked this week\n"
        "  closeloop prompt --now --user U024BE7LH   # one rep, by Slack user ID",
    )
    prompt.add_argument("--now", action="store_true", required=True, help="send it immediately")
    prompt.add_argument(
        "--user", nargs="+", metavar="U", type=_user_id, help="only these reps (Slack user IDs)"
    )
    prompt.add_argument(
        "--dry-run", action="store_true", help="print who would be prompted; send nothing"
    )
    _command(
        sub,
        "tick",
        "run the scheduled work once (prompts, reminders, retries)",
        "  closeloop tick                 # from cron, instead of a long-running scheduler",
    )

    deal = _command(
        sub,
        "deal-closed",
        "report a closed deal (as the CRM webhook does)",
        "  closeloop deal-closed --deal-id 42 --name 'Acme renewal' --outcome lost \\\n"
        "      --closed-at 2026-11-30T17:00:00Z --owner-email ana@example.com\n"
        "  closeloop deal-closed --json deal.json",
    )
    deal.add_argument(
        "--json", metavar="FILE", help="the webhook's JSON body from FILE (- = stdin)"
    )
    deal.add_argument("--deal-id")
    deal.add_argument("--name")
    deal.add_argument("--outcome", help="won, lost or no_decision")
    deal.add_argument("--closed-at", help="ISO 8601; UTC when no offset")
    deal.add_argument("--owner-email")
    deal.add_argument("--owner-slack-id")
    deal.add_argument("--amount")
    deal.add_argument("--source", help="lead source or campaign")

    imp = _command(
        sub,
        "import",
        "import an existing win/loss log or lead history: spreadsheet, CSV (database only)",
        "  closeloop import winloss old-log.csv\n"
        "  closeloop import winloss old-log.csv --skip-bad   # import the good rows anyway\n"
        "  closeloop import winloss deals.csv --from hubspot --owners owners.csv\n"
        '  closeloop import winloss opps.csv --from salesforce --map reason="Loss Reason (Quote)"\n'
        '  closeloop import winloss deals.csv --stage "Closed - No Budget=no_decision"\n'
        "  closeloop import leads leads.csv                  # a closeloop export leads file\n"
        "  closeloop import leads contacts.csv --from hubspot --owners owners.csv\n"
        '  closeloop import leads leads.csv --from salesforce --reason-map "No budget=Bad fit: '
        'no budget"',
    )
    imp.add_argument("kind", choices=["winloss", "leads"])
    imp.add_argument("file")
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows anyway")
    imp.add_argument(
        "--from",
        dest="source",
        choices=["salesforce", "hubspot", "pipedrive", "closeloop"],
        help="the CRM that wrote FILE (default: the header decides)",
    )
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD (reason, competitor, owner, ...) from the column COLUMN",
    )
    imp.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="STAGE=OUTCOME",
        help="winloss: a pipeline's own stage name as won, lost, no_decision or open (repeatable)",
    )
    imp.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS=RATING",
        help="leads: a CRM's own lead status as accepted, not_ready, rejected or new (repeatable)",
    )
    imp.add_argument(
        "--reason-map",
        action="append",
        default=[],
        metavar="TEXT=REASON",
        help="leads: a CRM's rejection reason as one of LEAD_REJECT_REASONS (repeatable)",
    )
    imp.add_argument(
        "--date-format",
        help="how FILE writes dates when 03/04/2026 could be either (e.g. %%d/%%m/%%Y)",
    )
    imp.add_argument(
        "--owners", metavar="FILE", help="owners by name: lines of name,email or name,slack_id"
    )

    exp = _command(
        sub,
        "export",
        "write CSV to stdout or a file (database only)",
        "  closeloop export winloss --since 2026-01-01 -o winloss.csv\n"
        "  closeloop export feedback > feedback.csv\n"
        "  closeloop export leads --since 2026-01-01 --out leads.csv   # latest rating each\n"
        "  closeloop export leads --ratings > ratings.csv             # every rating",
    )
    exp.add_argument("kind", choices=["winloss", "feedback", "leads"])
    exp.add_argument(
        "--since", type=_date, help="YYYY-MM-DD (leads: handed over that day or later)"
    )
    exp.add_argument("--output", "--out", "-o", help="file to write instead of stdout")
    exp.add_argument(
        "--ratings",
        action="store_true",
        help="leads: one row per rating (the history), not one per lead; not importable",
    )

    dig = _command(
        sub,
        "digest",
        "the monthly digest: print it, as JSON, or post it (printing is database only)",
        "  closeloop digest --month 2026-11            # print November's digest\n"
        "  closeloop digest --json                     # last month's figures as JSON\n"
        "  closeloop digest --post --dry-run           # what would be posted; nothing sent\n"
        "  closeloop digest --month 2026-11 --post     # post it now (once per month)",
    )
    dig.add_argument("--month", help="YYYY-MM (default: last month, in DIGEST_TIMEZONE)")
    dig.add_argument("--json", action="store_true", help="print the figures as JSON")
    dig.add_argument("--post", action="store_true", help="post it to DIGEST_CHANNEL now")
    dig.add_argument(
        "--dry-run",
        action="store_true",
        help="with --post: print what would be posted, send nothing",
    )

    comp = _command(
        sub,
        "competitors",
        "list, rename or merge competitor names (database only)",
        "  closeloop competitors list\n"
        "  closeloop competitors rename 'Acme Crop' 'Acme Corp'   # fix a spelling\n"
        "  closeloop competitors merge 'Acme Inc' 'Acme Corp'     # two names, one rival",
    )
    comp_sub = comp.add_subparsers(dest="action", required=True, parser_class=_Parser)
    comp_sub.add_parser("list", help="every competitor name, most named first")
    rename = comp_sub.add_parser(
        "rename", help="give competitor OLD the name NEW (the old spelling still finds it)"
    )
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")
    merge = comp_sub.add_parser("merge", help="merge competitor A into B")
    merge.add_argument("source", metavar="A")
    merge.add_argument("target", metavar="B")

    crm = _command(
        sub,
        "crm",
        "take in the closed deals a CRM's webhooks missed (HubSpot, Pipedrive: by token)",
        "  closeloop crm sync --since 2026-11-01                  # every CRM set up\n"
        "  closeloop crm sync --since 2026-11-01 --source hubspot",
    )
    crm_sub = crm.add_subparsers(dest="action", required=True, parser_class=_Parser)
    crm_sync = crm_sub.add_parser(
        "sync", help="ask each CRM for its deals closed since a day; take in the new ones once"
    )
    crm_sync.add_argument(
        "--since", type=_date, required=True, help="YYYY-MM-DD: deals closed that day or later"
    )
    crm_sync.add_argument("--source", choices=sorted(LISTERS), help="only this CRM")

    cli_leads.add_parser(sub, _command, _Parser)
    defn = _command(
        sub,
        "definition",
        "the definition of a qualified lead: set it from a Markdown file, show it, list its "
        "versions (show and history are database only)",
        "  closeloop definition show > definition.md      # the version in force (or a template)\n"
        "  closeloop definition set definition.md --note 'Raised the minimum size to 50'\n"
        "  closeloop definition show --version 2\n"
        "  closeloop definition history",
    )
    defn_sub = defn.add_subparsers(dest="action", required=True, parser_class=_Parser)
    defn_set = defn_sub.add_parser(
        "set", help="save FILE as a new version; the sales and marketing channels are told"
    )
    defn_set.add_argument(
        "file", metavar="FILE", help="Markdown: '# title', summary, '## Section's"
    )
    defn_set.add_argument("--note", help="what changed (default: 'Loaded from FILE')")
    defn_set.add_argument(
        "--author", type=_user_id, help="the Slack user ID to record as its author"
    )
    defn_show = defn_sub.add_parser("show", help="print a version as Markdown (default: in force)")
    defn_show.add_argument("--version", type=int, metavar="N", help="this version instead")
    defn_sub.add_parser("history", help="every version: number, date, author, what changed")

    forget = _command(
        sub,
        "forget-user",
        "forget one person (a departed employee): delete or pseudonymise their data, "
        "keep the counts",
        "  closeloop forget-user U024BE7LH          # shows what will happen, then asks\n"
        "  closeloop forget-user U024BE7LH --yes",
    )
    forget.add_argument("user_id", metavar="USER_ID", help="their Slack user ID (U…)")
    forget.add_argument("--yes", action="store_true", help="do not ask before forgetting")
    return parser


def _version() -> str:
    try:
        return metadata.version("closeloop")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _user_id(text: str) -> str:
    if not USER_ID.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Slack user ID: use the U… ID (profile > ⋮ > Copy member ID), "
            "not a name"
        )
    return text


# Commands that only read and write the database: they need DATABASE_URL and nothing of Slack.
def _database_only(args: argparse.Namespace) -> bool:
    if args.command == "digest":
        return not args.post
    if args.command == "definition":
        return args.action != "set"
    if args.command == "leads":
        return cli_leads.database_only(args)
    return args.command in ("migrate", "import", "export", "competitors")


def _date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-31") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_dotenv(os.environ.get("CLOSELOOP_ENV_FILE", ".env"))
    level = (os.environ.get("LOG_LEVEL") or "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        print(
            f"closeloop: LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
            file=sys.stderr,
        )
        return 2

    fmt = (os.environ.get("LOG_FORMAT") or "text").strip().lower()
    if fmt not in logs.FORMATS:
        print(f"closeloop: LOG_FORMAT={fmt!r} is not one of text, json", file=sys.stderr)
        return 2
    logs.configure(level, [os.environ.get(name) for name in SECRET_SETTINGS], fmt)
    try:
        settings = Settings.from_env(slack=not _database_only(args))
    except ConfigError as err:
        for line in err.lines:
            print(f"closeloop: {line}", file=sys.stderr)
        return 2
    if args.command == "check":
        return checks.main(settings)

    try:
        migrate.upgrade(settings.database_url)
    except Exception as err:  # an unreachable database is an operator problem: one line
        print(
            f"closeloop: cannot open the database at DATABASE_URL: {_first_line(err)}",
            file=sys.stderr,
        )
        return 2
    if args.command == "migrate":
        print("closeloop: database is up to date")
        return 0

    db.be_patient()  # no one waits on a command as Slack does (request threads: bot.db)
    rt = Runtime.build(settings)
    if args.command == "prompt" and args.dry_run:
        return cli.prompt_dry_run(rt, args.user)
    if args.command == "prompt":
        return _with_role(rt, lambda: cli.prompt_now(rt, args.user))
    if args.command == "tick":
        return _with_role(rt, lambda: _tick(rt))
    if args.command == "deal-closed":
        return _with_role(rt, lambda: cli.deal_closed(rt, args))
    if args.command == "digest" and args.post and not args.dry_run:
        return _with_role(rt, lambda: cli.digest(rt, args))
    if args.command == "forget-user":
        return _with_role(rt, lambda: cli.forget_user(rt, args))
    if args.command == "crm":
        return _with_role(rt, lambda: cli.crm_sync(rt, args))
    if args.command == "leads":
        return cli_leads.main(rt, args, with_role=lambda command: _with_role(rt, command))
    if args.command == "definition":
        if args.action == "set":
            return _with_role(rt, lambda: cli.definition(rt, args))
        return cli.definition(rt, args)
    if args.command in ("import", "export", "competitors", "digest"):
        handler = {
            "import": cli_data.import_,
            "export": cli_data.export,
            "competitors": cli.competitors,
            "digest": cli.digest,
        }[args.command]
        return handler(rt, args)
    if args.command == "scheduler":
        return _scheduler_only(rt)
    return _run(rt, scheduler=not args.no_scheduler)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _with_role(rt, command) -> int:
    """Run a one-off command; it sends the outbox itself only if no running bot has the
    scheduler role (otherwise that bot sends what the command queued)."""

    with role_if_free(rt.session_factory.kw["bind"]) as held:
        if held:
            rt.outbox.resume()
        try:
            return command()
        finally:
            rt.outbox.stop()


def _tick(rt) -> int:

    Tick(rt, _events_app(rt))()
    return 0


def _events_app(rt):
    """The Bolt app a process without Slack listeners uses to replay stored events."""

    events = EventInbox(rt)
    create_app(rt, inbox=events, token_verification=False)
    return events


def _run(rt, *, scheduler: bool) -> int:

    if not checks.at_start(rt.settings):  # one line a problem, before anything starts
        return 2
    if not rt.settings.socket_mode:
        try:  # before gunicorn is imported: it reads WEB_CONCURRENCY itself, with int()
            workers, _ = web_concurrency(), web_threads()
        except ConfigError as err:
            print(f"closeloop: {err}", file=sys.stderr)
            return 2
        os.environ["WEB_CONCURRENCY"] = str(workers)  # a blank one would stop gunicorn's import
        from bot.wsgi import ProductionServer  # only now: gunicorn reads it when imported

        rt.session_factory.kw["bind"].dispose()  # nothing of ours crosses gunicorn's fork
        ProductionServer(rt.settings, scheduler=scheduler).run()
        return 0

    log = logging.getLogger("bot")
    events = EventInbox(rt)
    try:
        app = create_app(rt, inbox=events)
    except BoltError as err:
        print(f"closeloop: Slack rejected SLACK_BOT_TOKEN ({_first_line(err)})", file=sys.stderr)
        return 2
    role = scheduler_role(rt, events) if scheduler else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = handler = None
    try:
        handler = SocketModeHandler(app, rt.settings.slack_app_token)
        try:
            handler.connect()
        except SLACK_ERRORS as err:
            print(
                f"closeloop: Slack refused the Socket Mode connection ({_first_line(err)}); "
                "check SLACK_APP_TOKEN (an xapp- token with connections:write)",
                file=sys.stderr,
            )
            return 2
        if handler.client.is_connected():
            log.info("Closeloop connected over Socket Mode")
        else:
            log.warning("Socket Mode handshake failed; slack-sdk keeps retrying every 10 s")
        if rt.settings.serves_webhooks or os.environ.get("PORT"):
            # Slack comes over the socket; HTTP serves only /healthz and the deal webhook.
            server = make_http_server(make_wsgi_app(None, rt), "0.0.0.0", rt.settings.port)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        while not stop.is_set():
            stop.wait(1)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
        if handler is not None:
            handler.close()
        if role is not None:
            role.stop()
        rt.after_ack.drain()  # what listeners left for after their ack
    return 0


def _scheduler_only(rt) -> int:
    """``closeloop scheduler``: no HTTP, no socket; take the scheduler role when free."""

    role = scheduler_role(rt, _events_app(rt))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            stop.wait(1)
    except KeyboardInterrupt:
        pass
    finally:
        role.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

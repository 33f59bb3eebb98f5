"""The ``closeloop`` command (the same as ``python -m bot``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from dotenv import load_dotenv
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.error import BoltError

from bot import cli, db, logs, migrate
from bot.app import create_app
from bot.config import ConfigError, Settings, web_concurrency, web_threads
from bot.event_inbox import EventInbox
from bot.jobs.tick import Tick
from bot.leader import role_if_free
from bot.runtime import Runtime
from bot.scheduler import role as scheduler_role
from bot.server import make_http_server, make_wsgi_app
from bot.slack.client import SLACK_ERRORS

SECRET_SETTINGS = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "DEALS_WEBHOOK_SECRET",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="closeloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="upgrade the database and start the bot")
    run.add_argument("--no-scheduler", action="store_true", help="serve Slack only")
    sub.add_parser("migrate", help="upgrade the database to the newest schema")
    sub.add_parser("scheduler", help="run only the scheduler role (for a separate process)")
    prompt = sub.add_parser("prompt", help="send this week's feedback prompt")
    prompt.add_argument("--now", action="store_true", required=True, help="send it immediately")
    prompt.add_argument("--user", nargs="+", metavar="U", help="only these reps (user IDs)")
    prompt.add_argument(
        "--dry-run", action="store_true", help="print who would be prompted; send nothing"
    )
    sub.add_parser("tick", help="run the scheduled work once (prompts, reminders, retries)")

    deal = sub.add_parser("deal-closed", help="report a closed deal (as the CRM webhook does)")
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

    imp = sub.add_parser("import", help="import an existing win/loss spreadsheet (CSV)")
    imp.add_argument("kind", choices=["winloss"])
    imp.add_argument("file")
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows anyway")

    exp = sub.add_parser("export", help="write CSV to stdout (or --output)")
    exp.add_argument("kind", choices=["winloss", "feedback"])
    exp.add_argument("--since", type=_date, help="YYYY-MM-DD")
    exp.add_argument("--output", "-o", help="file to write instead of stdout")

    dig = sub.add_parser("digest", help="the monthly digest: print it, as JSON, or post it")
    dig.add_argument("--month", help="YYYY-MM (default: last month, in DIGEST_TIMEZONE)")
    dig.add_argument("--json", action="store_true", help="print the figures as JSON")
    dig.add_argument("--post", action="store_true", help="post it to DIGEST_CHANNEL now")
    dig.add_argument(
        "--dry-run",
        action="store_true",
        help="with --post: print what would be posted, send nothing",
    )

    comp = sub.add_parser("competitors", help="list or merge competitor names")
    comp_sub = comp.add_subparsers(dest="action", required=True)
    comp_sub.add_parser("list")
    merge = comp_sub.add_parser("merge", help="merge competitor A into B")
    merge.add_argument("source", metavar="A")
    merge.add_argument("target", metavar="B")

    forget = sub.add_parser(
        "forget-user",
        help="forget one person (a departed employee): delete or pseudonymise their data, "
        "keep the counts",
    )
    forget.add_argument("user_id", metavar="USER_ID", help="their Slack user ID (U…)")
    forget.add_argument("--yes", action="store_true", help="do not ask before forgetting")
    return parser


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
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"closeloop: {err}", file=sys.stderr)
        return 2

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
    if args.command in ("import", "export", "competitors", "digest"):
        handler = {
            "import": cli.import_,
            "export": cli.export,
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

    try:
        rt.client.auth_test()  # one clear line now, rather than a traceback per worker
    except SLACK_ERRORS as err:
        print(
            f"closeloop: Slack rejected SLACK_BOT_TOKEN ({_first_line(err)}); "
            "copy the Bot User OAuth Token again",
            file=sys.stderr,
        )
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
        if rt.settings.deals_webhook_secret or os.environ.get("PORT"):
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

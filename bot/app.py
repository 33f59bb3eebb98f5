"""create_app(runtime) -> the Bolt App with every listener; no module-level app or engine."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.listener.listener_completion_handler import ListenerCompletionHandler
from slack_sdk.webhook import WebhookClient

from bot import metrics
from bot.db import UNAVAILABLE
from bot.event_inbox import EVENT, EVENT_ATTEMPT, EVENT_ERROR, EventInbox
from bot.listeners import register_listeners
from bot.runtime import Runtime
from bot.services.errors import DomainError
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

SORRY = (
    "Sorry, Closeloop could not finish that because Slack or the database did not answer. "
    "Nothing you typed is lost; please try again in a minute, and tell your Closeloop admin "
    "if it keeps happening."
)


def answer_directly(body: dict, message: str) -> None:
    """Tell the person who clicked or typed a command, through the request's response_url
    (an ephemeral answer to their own request, which needs no database): what is left when
    a message cannot be queued in the outbox. Nothing for an event, which has none."""
    url = body.get("response_url")
    if not url:
        return
    try:
        WebhookClient(url, timeout=5).send(
            text=message, response_type="ephemeral", replace_original=False
        )
    except SLACK_ERRORS:
        log.exception("could not answer through the response_url either")


class FinishEvent(ListenerCompletionHandler):
    """Bolt calls this after a listener has really finished (after the error handler when
    it raised): only now is a claimed event marked done, or given back for a retry."""

    def __init__(self, inbox: EventInbox) -> None:
        self.inbox = inbox

    def handle(self, request: BoltRequest, response: BoltResponse | None) -> None:
        event_id = request.context.get(EVENT)
        if event_id:
            self.inbox.finished(event_id, request.context.get(EVENT_ERROR))


def drop_nul_characters(payload: object) -> None:
    """Remove every NUL character from the strings of a parsed Slack payload, in place.

    Text from Slack reaches the listeners, the event inbox and the database only through this
    parsed body, and PostgreSQL's text cannot hold a NUL (storing one was a 500). Removed, not
    refused: a NUL means nothing to the person who typed it, and a DM answer has no form to
    show an error in."""
    stack: list[dict | list] = [payload] if isinstance(payload, dict | list) else []
    while stack:
        item = stack.pop()
        keys: Iterable = item.keys() if isinstance(item, dict) else range(len(item))
        for key in list(keys):
            value = item[key]
            if isinstance(value, str):
                if "\x00" in value:
                    item[key] = value.replace("\x00", "")
            elif isinstance(value, dict | list):
                stack.append(value)


def _kind_of(body: dict) -> str:
    """What Slack sent, for the metrics: a slash command, an interaction's type, an event."""
    if body.get("command"):
        return "command"
    kind = body.get("type")
    if kind == "event_callback":
        return "event"
    return kind if isinstance(kind, str) and kind.isidentifier() else "other"


def create_app(
    rt: Runtime, *, inbox: EventInbox | None = None, token_verification: bool = True
) -> App:
    """The Bolt app for ``rt``. Socket Mode needs no signing secret; HTTP mode verifies it.

    A listener runs on the thread that answers Slack (``process_before_response``): it
    validates, stores what must not be lost, calls ``ack()`` and returns at once, handing
    what can wait to ``context["later"]`` (bot.afterack). Events API events are stored and
    answered first, then processed through this same app (bot.event_inbox); ``inbox`` is
    the one the scheduler's tick replays (a new one when not given).
    """
    settings = rt.settings
    inbox = inbox or EventInbox(rt)
    app = App(
        process_before_response=True,
        client=rt.client,
        signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not settings.socket_mode,
        token_verification_enabled=token_verification,
        # An event no listener takes reaches on_error, which marks it done in the inbox.
        raise_error_for_unhandled_request=True,
        logger=logging.getLogger("bot.bolt"),
    )

    def inject_runtime(context, body, next):  # noqa: A002 - Bolt's argument name
        context["rt"] = rt
        metrics.request_kind(_kind_of(body))

        def later(fn, *args, opens_modal: bool = False, **kwargs):
            return rt.after_ack.later(
                fn,
                *args,
                on_error=lambda error: on_error(error, body, context),
                opens_modal=opens_modal,
                **kwargs,
            )

        context["later"] = later
        # Opening a modal the person is waiting for: threads of its own (bot.afterack).
        context["open_modal"] = lambda fn, *args, **kwargs: later(
            fn, *args, opens_modal=True, **kwargs
        )
        next()

    def without_nul_characters(body, next):  # noqa: A002
        drop_nul_characters(body)
        next()

    def store_events_first(body, context, next):  # noqa: A002
        """An Events API delivery is stored, claimed and answered 200 here, before anything
        else; a duplicate (done, or being processed) is answered and ignored. Its listener
        runs afterwards, dispatched from the inbox. A database error propagates: Slack gets
        a 500 and delivers the event again."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if not event_id or context.get(EVENT):
            next()  # not an event, or one the inbox is processing now
            return
        attempt = inbox.receive(body)
        if attempt is None:
            log.info("event %s already processed or in progress; ignoring it", event_id)
        else:
            rt.after_ack.later(inbox.process, body, attempt)
        return BoltResponse(status=200, body="")

    def on_error(error: Exception, body: dict, context) -> BoltResponse | None:
        """Domain errors become a message for the user; anything else is logged in full.

        A stored event is answered 200 even when its processing failed: the inbox has it and
        processes it again. So is an event no listener takes (Bolt would answer 404, and
        Slack would send it again)."""
        _tell_about(error, body, context)
        if context.get(EVENT):
            return BoltResponse(status=200, body="")
        return None

    def _tell_about(error: Exception, body: dict, context) -> None:
        if isinstance(error, BoltUnhandledRequestError):
            log.info("no listener for this request (%s)", body.get("type") or "unknown type")
            if context.get(EVENT):  # an event nothing of ours listens to: done with it
                inbox.finished(context[EVENT])
            return
        if context.get(EVENT) and not isinstance(error, DomainError):
            context[EVENT_ERROR] = error  # FinishEvent gives the claim back
        user = body.get("user")
        user_id = (
            (user.get("id") if isinstance(user, dict) else user)
            or body.get("user_id")
            or (body.get("event") or {}).get("user")
        )
        if isinstance(error, DomainError):
            message = str(error)
        else:
            log.error("listener failed", exc_info=error)
            message = SORRY
            if (context.get(EVENT_ATTEMPT) or 1) > 1:
                return  # told when it first failed; retries fail quietly
        if not user_id:
            return
        if isinstance(error, UNAVAILABLE):
            # The database just failed this request (away, silent, or locked past its
            # timeout): queueing the apology there would keep Slack waiting as long again.
            log.error("could not queue a message for %s", user_id)
            metrics.database_error("request")
            answer_directly(body, message)
            return
        try:
            rt.tell(user_id, message)
        except Exception:  # the database is away too: answer the click or command itself
            log.exception("could not queue a message for %s", user_id)
            metrics.database_error("request")
            answer_directly(body, message)

    app.middleware(without_nul_characters)  # before the event inbox stores anything
    app.middleware(store_events_first)
    app.middleware(inject_runtime)
    app.error(on_error)
    # Bolt has no App option for it: the runner's handler is replaced, as App.error does.
    app.listener_runner.listener_completion_handler = FinishEvent(inbox)
    register_listeners(app)
    inbox.attach(app)
    return app

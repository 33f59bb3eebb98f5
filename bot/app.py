"""create_app(runtime) -> the Bolt App with every listener; no module-level app or engine."""

from __future__ import annotations

import logging
from concurrent.futures import Executor

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.listener.listener_completion_handler import ListenerCompletionHandler

from bot.flows.inbox import REPLAY, Inbox
from bot.listeners import register_listeners
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import DomainError

log = logging.getLogger(__name__)

SORRY = (
    "Sorry, Closeloop could not finish that because Slack or the database did not answer. "
    "Nothing you typed is lost; please try again in a minute, and tell your Closeloop admin "
    "if it keeps happening."
)

EVENT = "closeloop_event_id"  # in the Bolt context: the inbox event this request claimed
EVENT_ATTEMPT = "closeloop_event_attempt"
EVENT_ERROR = "closeloop_event_error"  # the listener failed (set by the error handler)


class FinishEvent(ListenerCompletionHandler):
    """Bolt calls this after a listener has really finished (in HTTP and Socket Mode alike,
    on the ``listener_executor`` thread, after the error handler when it raised): only now
    is a claimed event marked done, or given back for a retry."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def handle(self, request: BoltRequest, response: BoltResponse | None) -> None:
        event_id = request.context.get(EVENT)
        if event_id:
            self.inbox.finished(event_id, request.context.get(EVENT_ERROR))


def create_app(
    rt: Runtime, *, token_verification: bool = True, listener_executor: Executor | None = None
) -> App:
    """The Bolt app for ``rt``. Socket Mode needs no signing secret; HTTP mode verifies it.

    A listener runs on the thread that answers Slack (``process_before_response``): it
    validates, stores what must not be lost, calls ``ack()`` and returns at once, handing
    what can wait to ``context["later"]`` (:meth:`Runtime.later`; ``listener_executor``
    replaces its threads, as the tests do to wait for that work). So the answer leaves the
    moment the listener returns, instead of when Bolt's waiting thread next looks (it polls
    every 10 ms), and the work after the ack yields to the requests still being answered.

    Events API events go through the inbox (bot.flows.inbox): stored and claimed before the
    listener runs, done after it finished (before their 200, so a failure is answered 500 and
    Slack retries); ``rt.bolt_app`` is this app, for the tick's replay.
    """
    settings = rt.settings
    if listener_executor is not None:
        rt.later_executor = rt.modal_executor = listener_executor
    inbox = Inbox(rt)
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
        context["later"] = lambda fn, *args, **kwargs: rt.later(
            fn, *args, on_error=lambda error: on_error(error, body, context), **kwargs
        )
        # Opening a modal the person is waiting for: its own threads (see Runtime.later).
        context["open_modal"] = lambda fn, *args, **kwargs: rt.later(
            fn,
            *args,
            on_error=lambda error: on_error(error, body, context),
            opens_modal=True,
            **kwargs,
        )
        next()

    def process_each_event_once(body, context, next):  # noqa: A002
        """Events API retries and Socket Mode redeliveries share event_id: the event is
        stored and claimed here, and a duplicate (done, or being processed) is acknowledged
        and ignored. A database error propagates: Slack gets a 500 and delivers it again."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id:
            attempt = inbox.receive(body)
            if attempt is None:
                log.info("event %s already processed or in progress; ignoring it", event_id)
                return BoltResponse(status=200, body="")
            context[EVENT], context[EVENT_ATTEMPT] = event_id, attempt
        next()

    def on_error(error: Exception, body: dict, context) -> BoltResponse | None:
        """Domain errors become a message for the user; anything else is logged in full.

        A stored event is answered 200 even when its processing failed: the inbox has it and
        processes it again (Slack's retry of a 500 would add nothing, and Slack turns off the
        event subscriptions of an app that keeps answering errors). So is an event no
        listener takes (Bolt would answer 404, and Slack would send it again)."""
        told = _tell_about(error, body, context)
        if context.get(EVENT):  # stored; an event no listener takes is done with, too
            return BoltResponse(status=200, body="")
        return told

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
            if context.get(REPLAY) or (context.get(EVENT_ATTEMPT) or 1) > 1:
                return  # told when it first failed; retries and replays fail quietly
        if user_id:
            rt.tell(user_id, message)

    app.middleware(inject_runtime)
    app.middleware(process_each_event_once)
    app.error(on_error)
    # Bolt has no App option for it: the runner's handler is replaced, as App.error does.
    app.listener_runner.listener_completion_handler = FinishEvent(inbox)
    register_listeners(app)
    rt.bolt_app = app
    return app


__all__ = ["create_app", "SLACK_ERRORS"]

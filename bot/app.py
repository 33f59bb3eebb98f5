"""create_app(runtime) -> the Bolt App with every listener; no module-level app or engine."""

from __future__ import annotations

import logging
from concurrent.futures import Executor

from slack_bolt import App, BoltResponse

from bot.db import session_scope
from bot.flows import first_delivery
from bot.listeners import register_listeners
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import DomainError

log = logging.getLogger(__name__)

SORRY = (
    "Sorry, Closeloop could not finish that because Slack or the database did not answer. "
    "Nothing you typed is lost; please try again in a minute, and tell your Closeloop admin "
    "if it keeps happening."
)


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
    Events are processed before their 200, so a failure is answered 500 and Slack retries.
    """
    settings = rt.settings
    if listener_executor is not None:
        rt.later_executor = listener_executor
    app = App(
        process_before_response=True,
        client=rt.client,
        signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not settings.socket_mode,
        token_verification_enabled=token_verification,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("bot.bolt"),
    )

    def inject_runtime(context, body, next):  # noqa: A002 - Bolt's argument name
        context["rt"] = rt
        context["later"] = lambda fn, *args, **kwargs: rt.later(
            fn, *args, on_error=lambda error: on_error(error, body), **kwargs
        )
        next()

    def process_each_event_once(body, next):  # noqa: A002
        """Events API retries and Socket Mode redeliveries share event_id: handle it once."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id:
            with session_scope(rt.session_factory) as session:
                fresh = first_delivery(session, event_id, rt.now())
            if not fresh:
                log.info("event %s already processed; ignoring the retry", event_id)
                return BoltResponse(status=200, body="")
        next()

    def on_error(error: Exception, body: dict) -> None:
        """Domain errors become a message for the user; anything else is logged in full."""
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
        if user_id:
            rt.tell(user_id, message)

    app.middleware(inject_runtime)
    app.middleware(process_each_event_once)
    app.error(on_error)
    register_listeners(app)
    return app


__all__ = ["create_app", "SLACK_ERRORS"]

"""Processing stored CRM deliveries: right after the answer (the after-ack threads), and by
the scheduler's tick for any left unprocessed (a crash, the CRM's API down)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping

from bot.db import session_scope
from bot.intake import hubspot, pipedrive, salesforce
from bot.intake.errors import TryLater, Unprocessable
from bot.models import CrmSource, InboxState
from bot.runtime import Runtime
from bot.services import crm_inbox

log = logging.getLogger(__name__)

Processor = Callable[[Runtime, str], str]  # (runtime, stored body) -> what came of it

# Each CRM's processor, by the source its deliveries are stored under.
PROCESSORS: Mapping[str, Processor] = {
    CrmSource.HUBSPOT.value: hubspot.process,
    CrmSource.SALESFORCE.value: salesforce.process,
    CrmSource.PIPEDRIVE.value: pipedrive.process,
}


def process(rt: Runtime, delivery_pks: Iterable[int]) -> None:
    """Process these deliveries (each claimed first: another process may have it)."""
    owner = f"{rt.instance_id}:{secrets.token_hex(4)}"[-64:]
    for pk in delivery_pks:
        process_one(rt, pk, owner=owner)


def process_one(rt: Runtime, delivery_pk: int, *, owner: str) -> None:
    with session_scope(rt.session_factory) as session:
        row = crm_inbox.claim(session, delivery_pk=delivery_pk, owner=owner, now=rt.now())
        if row is None:
            return
        source, body, delivery_id = row.source, row.body, row.delivery_id
    processor = PROCESSORS.get(source)
    error: str | None = None
    final = False
    note = ""
    try:
        if processor is None:
            raise Unprocessable(f"no processor for {source!r} deliveries")
        note = processor(rt, body)
    except TryLater as err:
        error = f"TryLater: {err}"
    except Unprocessable as err:
        error, final = f"Unprocessable: {err}", True
    except Exception as err:  # a bug or the database: logged with its traceback, tried again
        log.exception("processing %s delivery %s failed", source, delivery_id)
        error = f"{type(err).__name__}: {err}"
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        if error is None:
            done = crm_inbox.finish(
                session, delivery_pk=delivery_pk, owner=owner, note=note, now=now
            )
            if not done:
                log.warning("%s delivery %s finished after its claim ran out", source, delivery_id)
            return
        state = crm_inbox.release(
            session, delivery_pk=delivery_pk, owner=owner, error=error, now=now, final=final
        )
    if state == InboxState.FAILED:
        log.error("%s delivery %s given up: %s", source, delivery_id, error)
    else:
        log.info("%s delivery %s to be tried again: %s", source, delivery_id, error)


def process_due(rt: Runtime) -> int:
    """The tick's step: deliveries left unprocessed (never tried, failed for now, or
    abandoned by a process that died); done ones older than a month forgotten."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        crm_inbox.give_up_abandoned(session, now=now)
        crm_inbox.prune(session, now=now)
        pks = crm_inbox.due(session, now=now)
    process(rt, pks)
    return len(pks)

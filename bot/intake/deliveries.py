"""Processing stored CRM deliveries: right after the answer (the after-ack threads), and by
the scheduler's tick for any left unprocessed (a crash, the CRM's API down).

And the reconciliation of webhooks that never came: each CRM read with an API token lists its
deals closed since a day, stored as deliveries of their own (a deal found again in the same
state is a duplicate) and processed by the same processor, which takes a deal in once
(``hubspot:<id>``, ``pipedrive:<id>``) however it came. The tick runs it once a day (``sync_due``);
``closeloop crm sync --since`` runs it by hand."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.db import session_scope
from bot.intake import hubspot, pipedrive, salesforce
from bot.intake.errors import NotConfigured, TryLater, Unprocessable
from bot.models import CrmSource, InboxState
from bot.runtime import Runtime
from bot.services import crm_inbox, installation, job_runs

log = logging.getLogger(__name__)

Processor = Callable[[Runtime, str], str]  # (runtime, stored body) -> what came of it

# Each CRM's processor, by the source its deliveries are stored under.
PROCESSORS: Mapping[str, Processor] = {
    CrmSource.HUBSPOT.value: hubspot.process,
    CrmSource.SALESFORCE.value: salesforce.process,
    CrmSource.PIPEDRIVE.value: pipedrive.process,
}

# (runtime, since) -> pages of (delivery id, body): the deals a CRM has closed since then,
# as deliveries its processor takes. Raises NotConfigured when the CRM is not set up, and
# TryLater when it cannot be read (after the pages it could read).
Lister = Callable[[Runtime, datetime], Iterator[list[tuple[str, str]]]]

# Each CRM that can be asked for its closed deals (with an API token), by source. The daily
# run asks only those whose Settings say ``<source>_configured``.
LISTERS: Mapping[str, Lister] = {
    CrmSource.HUBSPOT.value: hubspot.closed_since,
    CrmSource.PIPEDRIVE.value: pipedrive.closed_since,
}
SYNC_JOB = "crm-sync"
SYNC_EVERY = timedelta(days=1)
SYNC_RETRY = timedelta(hours=1)  # a sync a CRM failed is tried again after this


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


@dataclass(frozen=True)
class Synced:
    """What a source's reconciliation found: ``found`` closed deals, ``new`` of them not
    stored before; ``skipped`` says why the source was not read, ``error`` why it stopped."""

    source: str
    found: int = 0
    new: int = 0
    skipped: str | None = None
    error: str | None = None


def sync(rt: Runtime, *, since: datetime, sources: Iterable[str] | None = None) -> list[Synced]:
    """Ask each CRM (``sources``, default every one in LISTERS) for its deals closed since
    ``since``; store each as a delivery (once) and process the new ones."""
    results = []
    for source in sources if sources is not None else LISTERS:
        results.append(_sync_one(rt, source, since))
    return results


def _sync_one(rt: Runtime, source: str, since: datetime) -> Synced:
    lister = LISTERS.get(source)
    if lister is None:
        return Synced(source, skipped=f"{source} cannot be asked for its closed deals")
    found = new = 0
    try:
        for page in lister(rt, since):
            now = rt.now()
            stored: list[int] = []
            with session_scope(rt.session_factory) as session:
                for delivery_id, body in page:
                    pk = crm_inbox.store(
                        session,
                        source=source,
                        delivery_id=delivery_id,
                        body=body,
                        headers={},
                        now=now,
                    )
                    if pk is not None:
                        stored.append(pk)
            found, new = found + len(page), new + len(stored)
            process(rt, stored)  # a delivery that fails is the tick's, as a webhook's
    except NotConfigured as err:
        return Synced(source, skipped=str(err))
    except TryLater as err:
        log.warning("%s: reconciling stopped after %d closed deals: %s", source, found, err)
        return Synced(source, found=found, new=new, error=str(err))
    log.info("%s: %d closed deals since %s, %d new", source, found, since.isoformat(), new)
    return Synced(source, found=found, new=new)


def sync_due(rt: Runtime) -> list[Synced] | None:
    """The tick's step: the reconciliation, once a day (claimed in the database), back
    CRM_SYNC_DAYS days (further when the last good run is older), never before the
    installation began. None when it was not due."""
    configured = [s for s in LISTERS if getattr(rt.settings, f"{s}_configured", True)]
    if not configured:
        return None  # no CRM to ask: nothing written either
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        claimed = job_runs.claim(session, name=SYNC_JOB, now=now, every=SYNC_EVERY)
        started = installation.started_at(session)
    if claimed is None:
        return None
    back = timedelta(days=rt.settings.crm_sync_days)
    since = now - back
    if claimed.last_ok_at is not None:
        since = min(since, claimed.last_ok_at - back)
    if started is not None:
        since = max(since, started)
    try:
        results = sync(rt, since=since, sources=configured)
    except Exception as err:  # a bug or the database: tried again in an hour, and logged
        with session_scope(rt.session_factory) as session:
            job_runs.finished(
                session,
                name=SYNC_JOB,
                started_at=claimed.started_at,
                error=f"{type(err).__name__}: {err}",
                retry_at=now + SYNC_RETRY,
            )
        raise
    errors = [f"{r.source}: {r.error}" for r in results if r.error]
    with session_scope(rt.session_factory) as session:
        job_runs.finished(
            session,
            name=SYNC_JOB,
            started_at=claimed.started_at,
            error="; ".join(errors) or None,
            retry_at=now + SYNC_RETRY,
        )
    return results

"""The database refuses connections for a while: the scheduler's tick, a rep's clicks and
form, Slack events delivered meanwhile and redelivered afterwards, and a process taking the
scheduler role while the database is away.

The running app in these tests reaches its database through :class:`Outage`:

* PostgreSQL: through a TCP proxy on 127.0.0.1 (port 0). ``down()`` cuts every open
  connection and stops listening, so a pooled connection fails its pre-ping and a new one is
  refused (ECONNREFUSED), as when the database server goes away; ``up()`` listens again on
  the same port.
* SQLite: a pooled connection is treated as dead on checkout and opening the file fails with
  ``sqlite3.OperationalError`` ("unable to open database file"), as when its volume is gone.

Either way the code under test meets SQLAlchemy's own ``OperationalError`` from the pool, on
the same engine and session factory it uses in production. Setup and checks go through the
suite's own engine, which never goes down. Every outage ends when its test does.
"""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import threading
import time
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import event, func, make_url
from sqlalchemy import select as sql_select
from sqlalchemy.exc import DisconnectionError

from bot import scheduler as sched_mod
from bot.app import SORRY
from bot.db import make_engine, make_session_factory, normalise_url
from bot.jobs.tick import Tick
from bot.leader import SchedulerRole
from bot.models import (
    Acknowledgement,
    Digest,
    FeedbackAnswer,
    InboundEvent,
    LoopPost,
    Prompt,
)
from tests.conftest import _wipe
from tests.harness import events_of, tick
from tests.test_loop_scenario import FRI_1500_UTC, all_text, channel_posts, dms_to, stored

BULLETS = "- ROI opener\n- Security deck\n- Budgets move to Q3"


# --- the outage -----------------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> -> ``target``, byte for byte, until ``down()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._accept, args=(listener, self._stop), name="db-proxy", daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        listener, thread = self._listener, self._thread
        self._listener = self._thread = None
        if listener is not None:
            self._stop.set()
            if thread is not None:
                thread.join(5)
            listener.close()
        with self._lock:
            open_sockets, self._sockets = self._sockets, set()
        for sock in open_sockets:
            _close(sock)

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.02)
            if not ready or stop.is_set():
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class Outage:
    """An engine on the test database that can be cut off (see the module docstring)."""

    def __init__(self, database_url: str) -> None:
        url = make_url(normalise_url(database_url))
        self.backend = url.get_backend_name()
        self.is_down = False
        self._armed = False
        self.proxy: TcpProxy | None = None
        if self.backend == "postgresql":
            self.proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
            self.proxy.up()
            url = url.set(host="127.0.0.1", port=self.proxy.port)
        self.engine = make_engine(url.render_as_string(hide_password=False))
        event.listen(self.engine, "do_connect", self._connect)
        event.listen(self.engine.pool, "checkout", self._checkout)

    def _connect(self, _dialect, _record, _cargs, _cparams):
        if self.is_down and self.backend == "sqlite":
            raise sqlite3.OperationalError("unable to open database file")
        return None  # connect as usual (through the proxy, for PostgreSQL)

    def _checkout(self, _dbapi_conn, _record, _proxy):
        if self._armed:
            self._armed = False
            self.down()
        # SQLite: the pooled connection died with the database; the pool reconnects (and
        # fails). PostgreSQL needs no help: the proxy really cut it, so the unit of work
        # meets the dead connection and SQLAlchemy invalidates the whole pool, as in
        # production (a DisconnectionError raised here would discard this one only).
        if self.is_down and self.backend == "sqlite":
            raise DisconnectionError("the database went away")

    def down(self) -> None:
        self.is_down = True
        if self.proxy is not None:
            self.proxy.down()

    def up(self) -> None:
        self._armed = False
        if self.proxy is not None:
            self.proxy.up()
        self.is_down = False

    def down_at_next_checkout(self) -> None:
        """The database goes away just as the next unit of work asks for a connection."""
        self._armed = True

    def close(self) -> None:
        self.up()
        self.engine.dispose()
        if self.proxy is not None:
            self.proxy.down()


@pytest.fixture
def outage(database_url):
    cut = Outage(database_url)
    try:
        yield cut
    finally:
        cut.close()


@pytest.fixture
def session_factory(engine, outage):
    """The app's sessions (conftest's harness uses this) go through the outage's engine."""
    _wipe(engine)
    yield make_session_factory(outage.engine)
    outage.up()
    _wipe(engine)


@pytest.fixture
def h(harness, engine):
    """The harness with October's digest recorded as posted (the digest is not under test:
    this keeps each tick from rendering its chart)."""
    with engine.begin() as conn:
        conn.execute(
            Digest.__table__.insert().values(
                month=date(2026, 10, 1), channel="CDIGEST", ts="1.000001", chart_file_id="F0"
            )
        )
    return harness


def count(engine, model, *where):
    with engine.connect() as conn:
        return conn.scalar(sql_select(func.count()).select_from(model).where(*where))


def sorry_to(slack, user_id):
    return [c for c in dms_to(slack, user_id) if c.params.get("text") == SORRY]


def all_posts(slack):
    return slack.calls_to("chat.postMessage", include_failed=True)


def untold(caplog, user_id):
    """Log records of an apology to ``user_id`` that could not be queued: every message goes
    through the outbox, which is in the database, so while the database is away nobody can
    be told anything; the log says whom it concerned."""
    return [
        r for r in caplog.records if r.getMessage() == f"could not queue a message for {user_id}"
    ]


# --- (a) the scheduler's tick ---------------------------------------------------------------


def test_tick_during_an_outage_sends_nothing_and_the_next_one_sends_each_prompt_once(
    h, outage, engine, caplog
):
    slack, clock = h.slack, h.clock
    clock.set(FRI_1500_UTC)  # 16:00 on Friday in Berlin: Ana's prompt is due
    outage.down()
    tick(h.rt)  # does not raise: every step fails on its own and is logged
    tick(h.rt)
    assert all_posts(slack) == []  # nothing half-done: no DM without its prompt row
    failed_steps = {r.args[0] for r in caplog.records if "scheduled step" in r.getMessage()}
    assert {"prompts", "reminders", "monthly digest"} <= failed_steps
    outage.up()
    assert count(engine, Prompt) == 0

    clock.advance(minutes=1)
    tick(h.rt)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1 and dms_to(slack, "UBEN") == []
    with engine.connect() as conn:
        (status,) = conn.execute(sql_select(Prompt.status)).scalars().all()
    assert status == "sent"
    clock.advance(minutes=5)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1


def test_database_lost_between_the_dm_and_its_record_sends_the_dm_once(h, outage, engine):
    """The prompt's DM reached Slack and the database went away before the bot could record
    it: after recovery the retry finds the DM by its metadata instead of sending another."""
    slack, clock = h.slack, h.clock
    post_message = slack._chat_post_message  # the fake's own handler

    def post_then_lose_the_database(params):
        answer = post_message(params)
        if params.get("channel") == "UANA":
            outage.down()
        return answer

    slack.register("chat.postMessage", post_then_lose_the_database)
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    slack.register("chat.postMessage", post_message)
    outage.up()
    with engine.connect() as conn:
        prompt = conn.execute(sql_select(Prompt)).one()
    assert prompt.status == "pending" and prompt.dm_ts is None  # claimed, not recorded

    clock.advance(minutes=1)
    tick(h.rt)  # the claim is still fresh
    clock.advance(minutes=2, seconds=1)
    tick(h.rt)  # retried: found in the DM's history, recorded, not sent again
    tick(h.rt)
    (dm,) = dms_to(slack, "UANA")
    with engine.connect() as conn:
        prompt = conn.execute(sql_select(Prompt)).one()
    assert (prompt.status, prompt.dm_ts) == ("sent", dm.response["ts"])


# --- (b) a rep clicks and submits during the outage -----------------------------------------


def test_rep_clicking_and_submitting_during_an_outage_keeps_the_form_and_can_redo_it(
    h, outage, engine, caplog
):
    """The click is answered at once but opens no form. No DM can tell the rep while the
    database is away (every message is stored in the outbox first), so the click itself is
    answered, ephemerally, through its response_url. The form keeps what she typed and says
    so in place. Afterwards both work, once."""
    slack, clock = h.slack, h.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    (prompt,) = dms_to(slack, "UANA")
    button = stored(slack, prompt)
    h.click_button("UANA", button, prompt.response["channel"], "feedback_open")
    modal = slack.calls_to("views.open")[-1].params["view"]  # opened before the outage
    values = {"worked": "ROI opener", "fell_flat": "Security deck", "insight": "Budgets"}

    posts_before = len(all_posts(slack))
    outage.down()
    # A click: acknowledged at once (Slack shows no error); no modal without its prompt; the
    # apology could not be queued, so it answers the click itself, to her alone.
    started = time.monotonic()
    reply = h.click_button("UANA", button, prompt.response["channel"], "feedback_open")
    assert reply.status == 200 and time.monotonic() - started < 3
    assert len(slack.calls_to("views.open")) == 1
    assert len(all_posts(slack)) == posts_before
    assert len(untold(caplog, "UANA")) == 1
    (answered,) = [c for c in slack.calls if c.method == "response_url"]
    assert answered.params["text"] == SORRY and answered.params["response_type"] == "ephemeral"
    # The form: Slack gets an answer in time, an inline error, so the modal stays open with
    # what the rep typed and says it was not saved; nothing is stored.
    started = time.monotonic()
    reply = h.submit("UANA", modal, values)
    assert time.monotonic() - started < 3
    assert reply.status == 200 and reply.json()["response_action"] == "errors"
    assert "not saved" in reply.json()["errors"]["worked"]
    assert len(all_posts(slack)) == posts_before  # the form said it in place
    assert channel_posts(slack) == []
    assert "Answered" not in stored(slack, prompt)["text"]
    outage.up()
    assert count(engine, FeedbackAnswer) == 0 and count(engine, LoopPost) == 0
    with engine.connect() as conn:
        assert conn.scalar(sql_select(Prompt.status)) == "sent"

    # Afterwards the same click and the same form work, once.
    h.click_button("UANA", button, prompt.response["channel"], "feedback_open")
    assert len(slack.calls_to("views.open")) == 2
    assert h.submit("UANA", modal, values).status == 200
    assert count(engine, FeedbackAnswer) == 1
    (post,) = channel_posts(slack)
    assert "ROI opener" in all_text(post.params)
    assert "Answered" in stored(slack, prompt)["text"]
    assert sorry_to(slack, "UANA") == [] and len(untold(caplog, "UANA")) == 1  # none later


def test_marketers_note_submitted_during_an_outage_is_not_lost(h, outage, engine):
    """The note is stored before Slack is answered: while the database is away the modal
    stays open with the marketer's text and says it was not saved; afterwards the same
    submission closes the loop, once."""
    slack = h.slack
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", BULLETS)
    (post,) = channel_posts(slack)
    h.click_button("UMIA", stored(slack, post), "CMKTG", "loop_close")
    note_modal = slack.calls_to("views.open")[-1].params["view"]
    typed = {"note": "Moving budget to the ROI webinar"}
    posts_before = len(all_posts(slack))

    outage.down()
    started = time.monotonic()
    reply = h.submit("UMIA", note_modal, typed)
    assert time.monotonic() - started < 3
    outage.up()
    # Slack keeps the modal open (the note is still on the marketer's screen) and says why.
    assert reply.status == 200
    body = reply.json()
    assert body["response_action"] == "errors"
    assert "not saved" in body["errors"]["note"] and "again" in body["errors"]["note"]
    assert count(engine, Acknowledgement) == 0
    assert len(all_posts(slack)) == posts_before  # no thread reply, no DM, no apology
    assert "Loop closed" not in all_text(stored(slack, post))

    # Submitted again once the database is back: stored, the modal closes, the loop closes.
    reply = h.submit("UMIA", note_modal, typed)
    assert (reply.status, reply.body) == (200, "")
    with engine.connect() as conn:
        (note,) = conn.execute(sql_select(Acknowledgement.note)).scalars().all()
    assert note == typed["note"]
    (thread_reply,) = channel_posts(slack, threaded=True)
    assert "ROI webinar" in all_text(thread_reply.params)
    assert len([c for c in dms_to(slack, "UANA") if "ROI webinar" in all_text(c.params)]) == 1
    assert "Loop closed by <@UMIA>" in all_text(stored(slack, post))
    assert sorry_to(slack, "UMIA") == []


def test_win_loss_entry_submitted_during_an_outage_keeps_the_form_open(h, outage, engine):
    """A /winloss entry is stored before its ack: while the database is away the form stays
    open with what the rep typed and says it was not saved; resubmitted, it is stored once."""
    from bot.models import WinLossEntry
    from tests.test_winloss_scenario import QUOTE, fill, submit_winloss

    slack = h.slack
    h.clock.set(FRI_1500_UTC)
    h.command("UANA", "", command="/winloss")
    modal = slack.calls_to("views.open")[-1].params["view"]
    typed = fill(
        modal,
        deal_name="Initech expansion",
        outcome="lost",
        reason=QUOTE,
        reason_category="Price",
        insight="Lead with the consolidation story",
    )
    outage.down()
    started = time.monotonic()
    reply = submit_winloss(h, "UANA", modal, typed)
    assert time.monotonic() - started < 3
    outage.up()
    assert reply.status == 200 and reply.json()["response_action"] == "errors"
    assert "not saved" in reply.json()["errors"]["reason"]
    assert count(engine, WinLossEntry) == 0
    assert sorry_to(slack, "UANA") == []

    reply = submit_winloss(h, "UANA", modal, typed)
    assert (reply.status, reply.body) == (200, "")
    assert count(engine, WinLossEntry) == 1

    # The edit form names its deal, so the deal's owner is checked first, before anything
    # else is read: that read, too, keeps the form open while the database is away.
    (post,) = [c for c in slack.calls_to("chat.postMessage") if "Initech" in all_text(c.params)]
    h.click_button("UANA", stored(slack, post), post.response["channel"], "winloss_edit")
    edit_modal = slack.calls_to("views.open")[-1].params["view"]
    assert json.loads(edit_modal["private_metadata"])["deal"] is not None
    edited = fill(edit_modal, reason="We cannot justify a second license and its training")
    outage.down()
    reply = submit_winloss(h, "UANA", edit_modal, edited)
    outage.up()
    assert reply.status == 200 and reply.json()["response_action"] == "errors"
    assert "not saved" in reply.json()["errors"]["reason"]
    with engine.connect() as conn:
        assert conn.scalar(sql_select(WinLossEntry.edit_count)) == 0
    assert sorry_to(slack, "UANA") == []


# --- (c) Slack events delivered during the outage and redelivered afterwards ----------------


def _deliver(h, kind, post_ts, **kwargs):
    if kind == "dm":
        return h.dm("UANA", BULLETS, **kwargs)
    return h.react("UMIA", "CMKTG", post_ts, "white_check_mark", **kwargs)


def _ready(h, kind):
    """Ana's prompt is out; for a reaction, her answer is already in marketing's channel."""
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)
    if kind == "dm":
        return None
    h.dm("UANA", BULLETS)
    (post,) = channel_posts(h.slack)
    return post.response["ts"]


def _processed_once(h, engine, kind, event_id):
    slack = h.slack
    assert count(engine, InboundEvent, InboundEvent.event_id == event_id) == 1
    if kind == "dm":
        assert count(engine, FeedbackAnswer) == 1
        assert len(channel_posts(slack, threaded=False)) == 1
        confirmations = [
            c for c in dms_to(slack, "UANA") if "sent to marketing" in all_text(c.params)
        ]
        assert len(confirmations) == 1
    else:
        assert count(engine, Acknowledgement) == 1
        assert len(channel_posts(slack, threaded=True)) == 1
        told = [c for c in dms_to(slack, "UANA") if "from marketing read" in all_text(c.params)]
        assert len(told) == 1


@pytest.mark.parametrize("kind", ["dm", "reaction"])
def test_event_refused_during_an_outage_is_processed_once_when_slack_retries(
    h, outage, engine, caplog, kind
):
    """The outage is already on when the event arrives: recording its event_id fails, Slack
    gets a 500 (so it retries), and the retry after recovery is processed, once. Nothing is
    sent meanwhile, not even an apology (it could not be stored in the outbox: logged)."""
    slack = h.slack
    post_ts = _ready(h, kind)
    posts_before = len(all_posts(slack))
    user = "UANA" if kind == "dm" else "UMIA"

    outage.down()
    reply = _deliver(h, kind, post_ts, event_id="EvOUTAGE")
    assert reply.status == 500  # not acknowledged: Slack delivers it again
    assert len(untold(caplog, user)) == 1
    assert len(all_posts(slack)) == posts_before  # nothing, not even the apology
    outage.up()
    assert count(engine, InboundEvent, InboundEvent.event_id == "EvOUTAGE") == 0

    assert _deliver(h, kind, post_ts, event_id="EvOUTAGE", retry_num=1).status == 200
    assert _deliver(h, kind, post_ts, event_id="EvOUTAGE", retry_num=2).status == 200
    _processed_once(h, engine, kind, "EvOUTAGE")
    assert sorry_to(slack, user) == [] and len(untold(caplog, user)) == 1


@pytest.mark.parametrize("kind", ["dm", "reaction"])
def test_event_whose_processing_fails_after_its_claim_is_processed_when_slack_retries(
    h, outage, engine, caplog, kind
):
    """The event is stored and claimed, then the database goes away under its listener (so
    the claim cannot even be given back, nor an apology queued: logged, nothing sent), and
    Slack's retry after recovery is processed, once; the next retry is ignored."""
    slack = h.slack
    post_ts = _ready(h, kind)
    user = "UANA" if kind == "dm" else "UMIA"
    claimed = threading.Event()

    @event.listens_for(h.rt.session_factory, "before_flush")
    def _claiming(session, _ctx, _instances):
        if any(isinstance(o, InboundEvent) for o in session.new):
            session.info["claims_event"] = True

    @event.listens_for(h.rt.session_factory, "after_commit")
    def _claimed(session):
        if session.info.pop("claims_event", False) and not claimed.is_set():
            claimed.set()
            outage.down_at_next_checkout()  # the listener's first query meets the outage

    posts_before = len(all_posts(slack))
    _deliver(h, kind, post_ts, event_id="EvLOST")
    assert claimed.is_set() and outage.is_down
    assert len(untold(caplog, user)) == 1
    assert len(all_posts(slack)) == posts_before
    outage.up()

    _deliver(h, kind, post_ts, event_id="EvLOST", retry_num=1)
    _deliver(h, kind, post_ts, event_id="EvLOST", retry_num=2)
    _processed_once(h, engine, kind, "EvLOST")
    assert sorry_to(slack, user) == [] and len(untold(caplog, user)) == 1
    with engine.connect() as conn:
        row = conn.execute(sql_select(InboundEvent).filter_by(event_id="EvLOST")).one()
    assert (row.state, row.attempts, row.payload) == ("done", 2, None)


# --- a process takes the scheduler role while the database is away -------------------------


class WaitingScheduler:
    """The real scheduler; stopping it waits for a running tick (the test then empties the
    tables)."""

    def __init__(self, real) -> None:
        self.real = real

    def shutdown(self, wait: bool = False) -> None:
        self.real.shutdown(wait=True)


def test_scheduler_role_taken_during_an_outage_runs_the_tick_once_the_database_is_back(
    h, outage, engine
):
    """A process takes the scheduler role while the database is away (on SQLite the role's
    lock is a file, taken even then; on PostgreSQL it is taken once the database is back).
    Nothing is sent meanwhile; once the database is back, the next tick prompts Ana, once.

    The scheduler keeps no state of its own in the database, so it starts even during the
    outage: its first tick then fails step by step, and the tick of the next minute (brought
    forward here: APScheduler runs on the wall clock) does the work."""
    slack, clock = h.slack, h.clock
    clock.set(FRI_1500_UTC)
    rt = h.another_process(sends=False)  # sends only once it holds the role
    tick = Tick(rt, events_of(rt))
    started: list[WaitingScheduler] = []

    def start_scheduler() -> WaitingScheduler:
        started.append(WaitingScheduler(sched_mod.start(rt, tick)))
        return started[-1]

    outage.down()
    role = SchedulerRole(  # as bot.scheduler.role() builds it, polling faster
        engine=outage.engine,
        start_scheduler=start_scheduler,
        poll_seconds=0.1,
        on_give_up=rt.outbox.stop,
    )
    role.start()
    try:
        time.sleep(1.0)  # ten polls into the outage
        assert all_posts(slack) == []
        outage.up()
        deadline = time.monotonic() + 5
        while not role.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert role.is_leader and not rt.outbox.stopped
        # the next minute's tick (a first one may have run, and failed, during the outage)
        started[-1].real.get_job("closeloop-tick").modify(next_run_time=datetime.now(UTC))
        while not dms_to(slack, "UANA") and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert len(dms_to(slack, "UANA")) == 1
    finally:
        role.stop()
    assert rt.outbox.stopped  # giving the role up stops its sending
    assert len(dms_to(slack, "UANA")) == 1

"""Reading the sales team's time zones from Slack: users.info for a few people, users.list
pages for many (a 5,000-rep org's daily refresh would otherwise be 5,000 users.info calls,
50 minutes at Slack's Tier 4 limit, holding the scheduler's tick)."""

from __future__ import annotations

from sqlalchemy import select

from bot.db import session_scope
from bot.jobs.roster import USERS_INFO_AT_MOST, RosterSync
from bot.models import Member
from bot.slack.directory import USERS_LIST_PAGE

ZONES = ("Asia/Kolkata", "America/New_York", "Europe/Berlin", None)


def stored(h) -> dict[str, tuple[str | None, str | None]]:
    with session_scope(h.rt.session_factory) as session:
        return {m.user_id: (m.tz, m.name) for m in session.scalars(select(Member))}


def calls(slack, method: str, since: int = 0) -> int:
    return sum(1 for call in slack.calls[since:] if call.method == method)


def big_team(slack, size: int) -> list[str]:
    reps = [f"UREP{n:04d}" for n in range(size)]
    for n, rep in enumerate(reps):
        slack.add_user(rep, tz=ZONES[n % len(ZONES)], name=f"rep{n}")
    slack.set_usergroup("SSALES", reps)
    return reps


def test_a_large_team_is_read_from_users_list_pages(harness):
    h, slack = harness, harness.slack
    reps = big_team(slack, USERS_LIST_PAGE + 50)  # two pages of people, and a few more
    assert sorted(RosterSync(h.rt)()) == sorted(reps)
    assert calls(slack, "users.info") == 0
    pages = [c for c in slack.calls if c.method == "users.list"]
    assert len(pages) >= 2 and all(int(c.params["limit"]) == USERS_LIST_PAGE for c in pages)
    known = stored(h)
    for n, rep in enumerate(reps):
        assert known[rep] == (ZONES[n % len(ZONES)], f"rep{n}")

    # Within a day nothing is read again; a day later, all of them are (users.list again).
    mark = len(slack.calls)
    RosterSync(h.rt)()
    assert calls(slack, "users.list", mark) == calls(slack, "users.info", mark) == 0
    h.clock.advance(days=1, minutes=1)
    slack.add_user("UREP0001", tz="Pacific/Auckland", name="rep1")  # moved
    RosterSync(h.rt)()
    assert calls(slack, "users.list", mark) >= 2 and calls(slack, "users.info", mark) == 0
    assert stored(h)["UREP0001"][0] == "Pacific/Auckland"


def test_a_few_new_reps_are_read_one_by_one(harness):
    h, slack = harness, harness.slack
    reps = big_team(slack, USERS_INFO_AT_MOST)
    RosterSync(h.rt)()
    assert calls(slack, "users.list") == 0
    assert calls(slack, "users.info") == len(reps)
    assert stored(h)[reps[0]] == (ZONES[0], "rep0")


def test_reps_users_list_does_not_have_keep_their_zone_and_are_not_asked_every_sync(
    harness, caplog
):
    h, slack = harness, harness.slack
    reps = big_team(slack, USERS_INFO_AT_MOST + 5)
    ghosts = ["UGHOST1", "UGHOST2"]  # in the user group, unknown to users.list
    slack.set_usergroup("SSALES", reps + ghosts)
    RosterSync(h.rt)()
    assert "2 reps are not in users.list" in caplog.text
    with session_scope(h.rt.session_factory) as session:
        ghost = session.get(Member, "UGHOST1")
        assert ghost.tz is None and ghost.tz_checked_at is not None
    mark = len(slack.calls)
    RosterSync(h.rt)()
    assert calls(slack, "users.list", mark) == 0  # not every tick: once a day, like the rest


def test_when_users_list_fails_the_known_zones_stay_and_the_next_sync_tries_again(harness):
    h, slack = harness, harness.slack
    reps = big_team(slack, USERS_INFO_AT_MOST + 5)

    def checked_at():
        with session_scope(h.rt.session_factory) as session:
            return session.get(Member, reps[0]).tz_checked_at

    RosterSync(h.rt)()
    before, first_check = stored(h), checked_at()
    h.clock.advance(days=1, minutes=1)
    slack.inject_faults("users.list", fraction=1.0, statuses=(500,))
    mark = len(slack.calls)
    assert sorted(RosterSync(h.rt)()) == sorted(reps)  # the team itself is still synced
    assert calls(slack, "users.list", mark) >= 1
    assert {rep: stored(h)[rep] for rep in reps} == {rep: before[rep] for rep in reps}
    assert checked_at() == first_check  # still stale: asked again next time
    slack.inject_faults("users.list", fraction=0.0)
    mark = len(slack.calls)
    RosterSync(h.rt)()
    assert calls(slack, "users.list", mark) >= 1
    assert checked_at() > first_check


def test_what_users_list_gave_before_failing_is_kept(harness, monkeypatch):
    h, slack = harness, harness.slack
    reps = big_team(slack, USERS_LIST_PAGE + 50)
    client, pages = h.rt.directory._client, []
    real_users_list = client.users_list

    def second_page_fails(**kwargs):
        pages.append(kwargs)
        if len(pages) == 2:
            raise OSError("connection reset by peer")
        return real_users_list(**kwargs)

    monkeypatch.setattr(client, "users_list", second_page_fails)
    RosterSync(h.rt)()
    with session_scope(h.rt.session_factory) as session:
        checked = {m.user_id for m in session.scalars(select(Member)) if m.tz_checked_at}
    read = [rep for rep in reps if rep in checked]
    assert 0 < len(read) < len(reps)  # the first page's people are stored
    assert stored(h)[read[0]][0] == ZONES[reps.index(read[0]) % len(ZONES)]
    RosterSync(h.rt)()  # the rest are still stale: read on the next sync
    assert len(pages) >= 3
    with session_scope(h.rt.session_factory) as session:
        assert all(session.get(Member, rep).tz_checked_at for rep in reps)


def test_two_processes_finding_the_same_new_reps_at_once_both_succeed(session_factory):
    """Every worker's first tick (or a CLI prompt beside the running bot) reads the roster at
    the same moment: the second to store a new rep must not fail on the first one's row."""
    import threading
    from datetime import UTC, datetime

    from bot.services import roster as roster_svc

    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    reps = ["UONE", "UTWO", "UTHREE"]
    errors: list[BaseException] = []
    first = session_factory()
    roster_svc.set_sales_members(first, user_ids=reps, now=now)  # inserted, not committed

    def second() -> None:
        try:
            with session_scope(session_factory) as session:
                roster_svc.set_sales_members(session, user_ids=[*reps, "UFOUR"], now=now)
                roster_svc.record_profiles(session, {"UFIVE": ("UTC", "five")}, now=now)
        except BaseException as err:  # noqa: BLE001 - the test reports it
            errors.append(err)

    racer = threading.Thread(target=second)
    racer.start()
    racer.join(0.5)  # it has read the roster and now waits on the first one's rows
    first.commit()
    first.close()
    racer.join(10)
    assert not racer.is_alive()
    assert errors == []
    with session_scope(session_factory) as session:
        rows = {m.user_id: m.is_sales for m in session.scalars(select(Member))}
    assert rows == {"UONE": True, "UTWO": True, "UTHREE": True, "UFOUR": True, "UFIVE": False}

"""The monthly digest's figures, computed with SQL aggregates (no loading of every row).

Months are calendar months in DIGEST_TIMEZONE. Win rate is wins / (wins + losses); no
decisions are counted apart. Rates are fractions from 0 to 1 (None when nothing to divide).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from bot.models import (
    Competitor,
    Deal,
    FeedbackAnswer,
    LoopPost,
    Outcome,
    PostKind,
    Prompt,
    PromptStatus,
    WinLossEntry,
)
from bot.services import digest_leads
from bot.services.calendar import local_instant
from bot.services.errors import DomainError
from bot.services.figures import hours_between, median, money, rate
from bot.services.roster import display_names
from bot.services.winloss import reason_problem

MIN_SAMPLE = 5  # figures drawn from fewer deals carry a warning (DIGEST_MIN_SAMPLE)
QUOTES_PER_CATEGORY = 3
OPEN_LOOP_DAYS = 7


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """``2026-10`` -> Month; DomainError with one clear line otherwise."""
        match = re.fullmatch(r"\s*(\d{4})-(\d{1,2})\s*", text or "")
        # the digest also reads the month after (its end): 9999-12 has none in the calendar
        if (
            not match
            or not 1 <= int(match[2]) <= 12
            or int(match[1]) < 2000
            or (int(match[1]), int(match[2])) >= (date.max.year, 12)
        ):
            raise DomainError(f"--month {text!r} is not a month like 2026-10 (YYYY-MM)")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def containing(cls, instant: datetime, tz: ZoneInfo) -> Month:
        local = instant.astimezone(tz)
        return cls(local.year, local.month)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) of the month in ``tz``, as UTC instants."""
        midnight = datetime.min.time()
        return (
            local_instant(self.first_day, midnight, tz),
            local_instant(self.next().first_day, midnight, tz),
        )

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def first_working_day(month: Month) -> date:
    """The first Monday-to-Friday day of the month."""
    day = month.first_day
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


# --- win/loss -----------------------------------------------------------------------------


def outcome_counts(session: Session, start: datetime, end: datetime) -> dict:
    """Deals closed in [start, end): counts and amounts per outcome, and coverage."""
    rows = session.execute(
        select(
            Deal.outcome,
            func.count(Deal.id),
            func.sum(Deal.amount),
            func.count(WinLossEntry.id),
        )
        .outerjoin(WinLossEntry, WinLossEntry.deal_id == Deal.id)
        .where(Deal.closed_at >= start, Deal.closed_at < end)
        .group_by(Deal.outcome)
    ).all()
    by = {outcome: (n, amount, logged) for outcome, n, amount, logged in rows}
    wins = by.get(Outcome.WON, (0, None, 0))[0]
    losses = by.get(Outcome.LOST, (0, None, 0))[0]
    total = sum(v[0] for v in by.values())
    logged = sum(v[2] for v in by.values())
    return {
        "wins": wins,
        "losses": losses,
        "no_decisions": by.get(Outcome.NO_DECISION, (0, None, 0))[0],
        "win_rate": rate(wins, wins + losses),
        "amount_won": money(by.get(Outcome.WON, (0, None, 0))[1]),
        "amount_lost": money(by.get(Outcome.LOST, (0, None, 0))[1]),
        "closed_deals": total,
        "deals_with_entry": logged,
        "coverage": rate(logged, total),
    }


def loss_reasons(session: Session, start: datetime, end: datetime) -> dict:
    """Lost deals' entries by reason category, each with up to three verbatim quotes."""
    lost = and_(WinLossEntry.outcome == Outcome.LOST, Deal.closed_at >= start, Deal.closed_at < end)
    category = func.coalesce(WinLossEntry.reason_category, "Uncategorised")
    counts = dict(
        session.execute(
            select(category, func.count())
            .select_from(WinLossEntry)
            .join(Deal, Deal.id == WinLossEntry.deal_id)
            .where(lost)
            .group_by(category)
            .order_by(func.count().desc(), category)
        ).all()
    )
    ranked = (
        select(
            category.label("category"),
            WinLossEntry.reason.label("reason"),
            Deal.name.label("deal"),
            func.row_number()
            .over(partition_by=category, order_by=(WinLossEntry.logged_at, WinLossEntry.id))
            .label("n"),
        )
        .join(Deal, Deal.id == WinLossEntry.deal_id)
        .where(lost)
        .subquery()
    )
    quotes: dict[str, list[dict]] = {c: [] for c in counts}
    for row in session.execute(
        select(ranked.c.category, ranked.c.reason, ranked.c.deal)
        .where(ranked.c.n <= QUOTES_PER_CATEGORY)
        .order_by(ranked.c.category, ranked.c.n)
    ):
        quotes[row.category].append({"quote": row.reason, "deal": row.deal})
    return {"counts": counts, "quotes": quotes}


def reason_kinds(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """How many of the month's entries give a reason, and how many of those are shorthand:
    what the /winloss modal refuses (a label, fewer than four words) but an import of
    history keeps (see :func:`bot.services.winloss.reason_problem`)."""
    reasons = session.scalars(
        select(WinLossEntry.reason)
        .join(Deal, Deal.id == WinLossEntry.deal_id)
        .where(Deal.closed_at >= start, Deal.closed_at < end)
    )
    total = shorthand = 0
    for reason in reasons:
        total += 1
        shorthand += reason_problem(reason) is not None
    return {"reasons": total, "shorthand": shorthand}


def competitor_stats(session: Session, start: datetime, end: datetime) -> dict[str, dict]:
    """Per competitor named in the month's entries: deals, wins, losses."""
    rows = session.execute(
        select(
            Competitor.name,
            func.count(WinLossEntry.id),
            func.sum(case((WinLossEntry.outcome == Outcome.WON, 1), else_=0)),
            func.sum(case((WinLossEntry.outcome == Outcome.LOST, 1), else_=0)),
        )
        .join(WinLossEntry, WinLossEntry.competitor_id == Competitor.id)
        .join(Deal, Deal.id == WinLossEntry.deal_id)
        .where(Deal.closed_at >= start, Deal.closed_at < end)
        .group_by(Competitor.name)
        .order_by(func.count(WinLossEntry.id).desc(), Competitor.name)
    ).all()
    return {
        name: {"deals": n, "wins": int(w or 0), "losses": int(lo or 0)} for name, n, w, lo in rows
    }


def on_time(session: Session, start: datetime, end: datetime) -> dict:
    """The 24-hour rule for entries on deals closed in the month: overall and per rep."""
    rep = func.coalesce(Deal.owner_user_id, Deal.owner_email, "unknown")
    rows = session.execute(
        select(
            rep,
            func.count(WinLossEntry.id),
            func.sum(case((WinLossEntry.on_time.is_(True), 1), else_=0)),
        )
        .join(Deal, Deal.id == WinLossEntry.deal_id)
        .where(Deal.closed_at >= start, Deal.closed_at < end)
        .group_by(rep)
        .order_by(rep)
    ).all()
    per_rep = {
        who: {"entries": n, "on_time": int(ok or 0), "rate": rate(int(ok or 0), n)}
        for who, n, ok in rows
    }
    total = sum(v["entries"] for v in per_rep.values())
    good = sum(v["on_time"] for v in per_rep.values())
    return {
        "on_time_rate": rate(good, total),
        "on_time": good,
        "entries": total,
        "per_rep": per_rep,
    }


# --- weekly feedback ----------------------------------------------------------------------

_STOP = set(
    "a an and are as at be but by for from had has have he her his i if in into is it its "
    "me my no not of on or our out she so that the their them then there they this to too "
    "us was we were what when which who why will with you your didn't don't it's they're "
    "just very really more most much also than about after again all any can could did do "
    "does get got how like one only over same some such still week".split()
)


def objections(texts: list[str], top: int = 5) -> list[tuple[str, int]]:
    """The most-cited objections: two-word phrases (stop words left out) in 2+ answers."""
    counter: Counter[str] = Counter()
    for text in texts:
        words = [w for w in re.findall(r"[a-z][a-z'’-]+", text.casefold()) if w not in _STOP]
        counter.update({f"{a} {b}" for a, b in zip(words, words[1:], strict=False)})
    return [(phrase, n) for phrase, n in counter.most_common(top) if n >= 2]


def missed_weeks(session: Session, month: Month, *, user_id: str, now: datetime) -> list[date]:
    """The weeks starting in ``month`` whose prompt ``user_id`` was sent and neither
    answered nor skipped before the week closed (the digest's "missed"), oldest first."""
    return list(
        session.scalars(
            select(Prompt.week_start)
            .where(
                Prompt.user_id == user_id,
                Prompt.week_start >= month.first_day,
                Prompt.week_start < month.next().first_day,
                Prompt.status.not_in(
                    (PromptStatus.PENDING, PromptStatus.ANSWERED, PromptStatus.SKIPPED)
                ),
                Prompt.closes_at <= now,
            )
            .order_by(Prompt.week_start)
        )
    )


def feedback_figures(session: Session, month: Month, *, now: datetime) -> dict:
    """Prompts for weeks starting in the month: response rate per week and per rep.

    A prompt counts once it is answered or skipped, or once its week has closed
    (``closes_at``): a week still open at ``now`` is nobody's miss yet, and is counted
    apart (``still_open``)."""
    first, after = month.first_day, month.next().first_day
    sent_in_month = and_(
        Prompt.week_start >= first,
        Prompt.week_start < after,
        Prompt.status != PromptStatus.PENDING,
    )
    has_responded = Prompt.status.in_((PromptStatus.ANSWERED, PromptStatus.SKIPPED))
    in_month = and_(sent_in_month, or_(has_responded, Prompt.closes_at <= now))
    still_open = (
        session.scalar(select(func.count()).select_from(Prompt).where(sent_in_month, ~in_month))
        or 0
    )
    responded = case((has_responded, 1), else_=0)
    answered = case((Prompt.status == PromptStatus.ANSWERED, 1), else_=0)
    weeks = [
        {
            "week_start": week.isoformat(),
            "prompted": n,
            "responded": int(r or 0),
            "answered": int(a or 0),
            "response_rate": rate(int(r or 0), n),
        }
        for week, n, r, a in session.execute(
            select(Prompt.week_start, func.count(), func.sum(responded), func.sum(answered))
            .where(in_month)
            .group_by(Prompt.week_start)
            .order_by(Prompt.week_start)
        )
    ]
    prompted = sum(w["prompted"] for w in weeks)
    total_responded = sum(w["responded"] for w in weeks)
    reps = session.execute(
        select(Prompt.user_id, func.count(), func.sum(responded))
        .where(in_month)
        .group_by(Prompt.user_id)
    ).all()
    silent = sorted(
        ((user, n - int(r or 0)) for user, n, r in reps if int(r or 0) < n),
        key=lambda item: (-item[1], item[0]),
    )
    answers = (
        select(FeedbackAnswer).join(Prompt, Prompt.id == FeedbackAnswer.prompt_id).where(in_month)
    )
    # a forgotten person's answers keep their row (the counts) but no text: skipped here
    worked = session.scalars(
        answers.with_only_columns(FeedbackAnswer.worked)
        .where(FeedbackAnswer.worked != "")
        .order_by(FeedbackAnswer.updated_at.desc(), FeedbackAnswer.id.desc())
        .limit(3)
    ).all()
    flat_texts = session.scalars(answers.with_only_columns(FeedbackAnswer.fell_flat)).all()
    flat = session.scalars(
        answers.with_only_columns(FeedbackAnswer.fell_flat)
        .where(FeedbackAnswer.fell_flat != "")
        .order_by(FeedbackAnswer.updated_at.desc(), FeedbackAnswer.id.desc())
        .limit(3)
    ).all()
    return {
        "weeks": weeks,
        "prompted": prompted,
        "responded": total_responded,
        "feedback_response_rate": rate(total_responded, prompted),
        "reps_prompted": len(reps),
        "reps_always_responded": sum(1 for _u, n, r in reps if int(r or 0) == n),
        "reps_missing": [{"user_id": u, "missed": m} for u, m in silent],
        "still_open": still_open,
        "worked": list(worked),
        "fell_flat": list(flat),
        "objections": objections(list(flat_texts)),
    }


# --- closing the loop ---------------------------------------------------------------------


def loop_figures(session: Session, start: datetime, end: datetime, *, now: datetime) -> dict:
    """Posts created in the month: acknowledged share, median hours, loops open > 7 days."""
    in_month = and_(
        LoopPost.created_at >= start, LoopPost.created_at < end, LoopPost.ts.is_not(None)
    )
    total, acked = session.execute(
        select(
            func.count(LoopPost.id),
            func.sum(case((LoopPost.first_ack_at.is_not(None), 1), else_=0)),
        ).where(in_month)
    ).one()
    acked = int(acked or 0)
    hours = hours_between(
        session, func.coalesce(LoopPost.posted_at, LoopPost.created_at), LoopPost.first_ack_at
    )
    to_ack = median(
        session, select(hours.label("h")).where(in_month, LoopPost.first_ack_at.is_not(None))
    )
    open_rows = session.execute(
        select(
            LoopPost.kind,
            LoopPost.channel,
            LoopPost.ts,
            LoopPost.author_user_id,
            LoopPost.created_at,
        )
        .where(
            in_month,
            LoopPost.first_ack_at.is_(None),
            LoopPost.created_at <= now - timedelta(days=OPEN_LOOP_DAYS),
        )
        .order_by(LoopPost.created_at)
    ).all()
    return {
        "loop_posts": total,
        "acknowledged": acked,
        "acknowledged_rate": rate(acked, total),
        "median_hours_to_ack": None if to_ack is None else round(to_ack, 1),
        "open_loops": [
            {"kind": k, "channel": c, "ts": ts, "author": a, "created_at": at.isoformat()}
            for k, c, ts, a, at in open_rows
        ],
    }


def best_insights(session: Session, start: datetime, end: datetime, limit: int = 5) -> list:
    """Insights for marketing from the month, the ones marketing acknowledged first."""
    winloss = (
        select(
            WinLossEntry.insight.label("insight"),
            LoopPost.first_ack_at.label("acked"),
            LoopPost.author_user_id.label("who"),
            literal("winloss").label("kind"),
            LoopPost.created_at.label("at"),
        )
        .join(
            LoopPost,
            and_(LoopPost.kind == PostKind.WINLOSS, LoopPost.subject_id == WinLossEntry.id),
        )
        .where(
            LoopPost.created_at >= start,
            LoopPost.created_at < end,
            LoopPost.ts.is_not(None),
            WinLossEntry.insight.is_not(None),
        )
    )
    feedback = (
        select(
            FeedbackAnswer.insight.label("insight"),
            LoopPost.first_ack_at.label("acked"),
            LoopPost.author_user_id.label("who"),
            literal("feedback").label("kind"),
            LoopPost.created_at.label("at"),
        )
        .join(
            LoopPost,
            and_(LoopPost.kind == PostKind.FEEDBACK, LoopPost.subject_id == FeedbackAnswer.id),
        )
        .where(
            LoopPost.created_at >= start,
            LoopPost.created_at < end,
            LoopPost.ts.is_not(None),
            FeedbackAnswer.insight != "",  # a forgotten person's answer has no text left
        )
    )
    both = union_all(winloss, feedback).subquery()
    rows = session.execute(
        select(both)
        .order_by(case((both.c.acked.is_(None), 1), else_=0), both.c.acked, both.c.at.desc())
        .limit(limit)
    ).all()
    return [
        {"insight": r.insight, "kind": r.kind, "by": r.who, "acknowledged": r.acked is not None}
        for r in rows
    ]


# --- everything ---------------------------------------------------------------------------


def win_rate_history(session: Session, month: Month, tz: ZoneInfo, months: int = 6) -> list:
    """(month, win rate) for the ``months`` months ending with ``month``."""
    series = []
    current = month
    for _ in range(months):
        start, end = current.bounds(tz)
        counts = outcome_counts(session, start, end)
        series.append((str(current), counts["win_rate"], counts["wins"] + counts["losses"]))
        current = current.previous()
    return list(reversed(series))


def compute(
    session: Session,
    *,
    month: Month,
    tz: ZoneInfo,
    now: datetime,
    min_sample: int = MIN_SAMPLE,
    currency: str = "USD",
    rejection_alert: float = 0.30,
    lead_min_sample: int = 10,
) -> dict:
    """All the digest's figures for ``month`` and the month before (see the module doc).

    ``min_sample`` and ``currency`` (DIGEST_MIN_SAMPLE, CURRENCY) travel with the figures,
    for the builders: below ``min_sample`` a rate is shown as its count."""
    start, end = month.bounds(tz)
    prev_start, prev_end = month.previous().bounds(tz)
    current = outcome_counts(session, start, end)
    before = outcome_counts(session, prev_start, prev_end)
    competitors = competitor_stats(session, start, end)
    before_competitors = competitor_stats(session, prev_start, prev_end)
    rising = sorted(
        (
            (name, stats["deals"] - before_competitors.get(name, {}).get("deals", 0))
            for name, stats in competitors.items()
        ),
        key=lambda item: (-item[1], item[0]),
    )
    reasons = loss_reasons(session, start, end)
    feedback = feedback_figures(session, month, now=now)
    loops = loop_figures(session, start, end, now=now)
    timing = on_time(session, start, end)
    leads = digest_leads.lead_quality(
        session,
        start=start,
        end=end,
        prev_start=prev_start,
        prev_end=prev_end,
        now=now,
        rejection_alert=rejection_alert,
        min_sample=lead_min_sample,
    )
    decided = current["wins"] + current["losses"]
    insights = best_insights(session, start, end)
    people = (
        {r["user_id"] for r in feedback["reps_missing"]}
        | set(timing["per_rep"])
        | {i["by"] for i in insights if i["by"]}
        | {o["author"] for o in loops["open_loops"] if o["author"]}
    )
    warnings = []
    kinds = reason_kinds(session, start, end)
    if 0 < current["closed_deals"] < min_sample:
        warnings.append(
            f"Only {current['closed_deals']} closed deal(s) this month: treat rates as anecdotes."
        )
    change = (
        None
        if current["win_rate"] is None or before["win_rate"] is None
        else current["win_rate"] - before["win_rate"]
    )
    return {
        "month": str(month),
        "timezone": tz.key,
        **current,
        "previous": {"month": str(month.previous()), **before},
        "win_rate_change": change,
        "small_sample": 0 < decided < min_sample,
        "min_sample": min_sample,
        "currency": currency,
        "loss_reasons_by_category": reasons["counts"],
        "loss_quotes": reasons["quotes"],
        "reasons_total": kinds["reasons"],
        "reasons_shorthand": kinds["shorthand"],
        "competitors": competitors,
        # most losses first, then by name (the chart's order)
        "losses_by_competitor": dict(
            sorted(
                ((n, s["losses"]) for n, s in competitors.items() if s["losses"]),
                key=lambda item: (-item[1], item[0]),
            )
        ),
        "rising_competitors": [name for name, delta in rising if delta > 0][:3],
        "best_insights": insights,
        "feedback": feedback,
        "feedback_response_rate": feedback["feedback_response_rate"],
        **{
            k: loops[k]
            for k in (
                "loop_posts",
                "acknowledged",
                "acknowledged_rate",
                "median_hours_to_ack",
                "open_loops",
            )
        },
        "on_time_rate": timing["on_time_rate"],
        "on_time": timing["on_time"],
        "on_time_entries": timing["entries"],
        "on_time_per_rep": timing["per_rep"],
        "warnings": warnings,
        "names": display_names(session, people),
        "leads": leads,
        "has_data": bool(
            current["closed_deals"]
            or feedback["prompted"]
            or loops["loop_posts"]
            or leads["handed_over"]
        ),
    }

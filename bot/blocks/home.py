"""The App Home tab: what is waiting on this person."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.blocks import definition as definition_blocks
from bot.blocks import feedback as fb_blocks
from bot.blocks import leads as lead_blocks
from bot.blocks import winloss as wl_blocks
from bot.blocks.digest import pct, permalink, ratio
from bot.blocks.elements import actions, button, context, escape_fit, mention, section
from bot.models import PostKind, PromptStatus

MAX_BLOCKS = 100


def _when(instant: datetime, tz: ZoneInfo) -> str:
    local = instant.astimezone(tz)
    return f"{local:%a %b} {local.day}, {local:%H:%M}"


def _prompt_blocks(prompt: dict | None) -> list[dict]:
    if prompt is None:
        return [section("*This week's feedback*\nNo prompt yet: it arrives on schedule.")]
    week = fb_blocks.week_label(prompt["week_start"])
    status = prompt["status"]
    if status == PromptStatus.ANSWERED:
        line = f":white_check_mark: Answered for the {week}."
        button_ = button("Edit answer", fb_blocks.OPEN_ACTION, str(prompt["id"]))
    elif status == PromptStatus.SKIPPED:
        label = "Out this week" if prompt["skip_reason"] == "out" else "Nothing this week"
        line = f":zzz: Skipped ({label}) for the {week}."
        button_ = button("Answer anyway", fb_blocks.OPEN_ACTION, str(prompt["id"]))
    elif status == "missed":
        return [section(f"*This week's feedback*\n:hourglass: The {week} was missed.")]
    else:
        line = f":hourglass_flowing_sand: Waiting for your three bullets for the {week}."
        button_ = button("Answer", fb_blocks.OPEN_ACTION, str(prompt["id"]), style="primary")
    return [section(f"*This week's feedback*\n{line}"), actions("home_prompt", button_)]


def time_left(due: datetime, now: datetime) -> str:
    """``5 h 20 min left`` / ``overdue by 2 h``."""
    minutes = int(abs((due - now).total_seconds()) // 60)
    hours, rest = divmod(minutes, 60)
    span = f"{hours} h {rest} min" if hours else f"{rest} min"
    return f"{span} left" if due > now else f"overdue by {span}"


def _lead_blocks(leads: list[dict], *, tz: ZoneInfo, now: datetime) -> list[dict]:
    """The leads waiting for this person's rating, the most urgent first, with the time left."""
    if not leads:
        return []
    blocks = [section(f"*Leads waiting for your rating ({len(leads)})*")]
    for lead in leads:
        due = lead["due_at"]
        urgent = ":rotating_light: " if due <= now else ""
        where = f" · {escape_fit(lead['source'], 80)}" if lead.get("source") else ""
        view = lead_blocks.LeadView(lead["id"], lead["person"], lead.get("company"))
        blocks.append(
            section(
                f"{lead_blocks.who(view)}{where} — {urgent}{time_left(due, now)} "
                f"(due {_when(due, tz)})"
            )
        )
        blocks.append(lead_blocks.rating_buttons(lead["id"]))
    return blocks


def admin_blocks(admin: dict | None) -> list[dict]:
    """An admin's warnings: the definition of a qualified lead missing or not reviewed."""
    if admin is None:
        return []
    return definition_blocks.home_warning(**admin)


def _last_week_leads(leads: dict | None) -> list[dict]:
    """Marketing's view of last week's leads: the sources over the alert first."""
    if not leads:
        return []
    n = leads["min_sample"]
    lines = [
        f"*Leads last week ({leads['week']})*",
        f"{leads['handed_over']} handed to sales · rejected "
        f"{ratio(leads['rejected'], leads['rated'], n)} · not rated {leads['no_response']} · "
        f"rated within the SLA {ratio(leads['sla_on_time'], leads['sla_due'], n)}",
    ]
    for flagged in leads["flagged"][:10]:
        lines.append(
            f":warning: {escape_fit(flagged['source'] or 'no source', 80)}: rejected "
            f"{ratio(flagged['rejected'], flagged['rated'], n)}: its scoring needs a look"
        )
    return [section("\n".join(lines))]


def home_view(
    *,
    rep: dict | None,
    marketing: dict | None,
    tz: ZoneInfo,
    now: datetime,
    link_base: str = "",
    admin: dict | None = None,
) -> dict:
    """The Home view for someone who is a rep, in marketing, both, or neither (``admin``:
    an admin's, with what needs their attention first)."""
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Closeloop"}},
    ]
    blocks.extend(admin_blocks(admin))
    if rep is not None:
        blocks.extend(_prompt_blocks(rep["prompt"]))
        blocks.append({"type": "divider"})
        if rep["deals"]:
            blocks.append(section(f"*Deals waiting for a win/loss entry ({len(rep['deals'])})*"))
            for deal in rep["deals"][:20]:
                due = (
                    f":rotating_light: overdue since {_when(deal['deadline_at'], tz)}"
                    if deal["overdue"]
                    else f"due {_when(deal['deadline_at'], tz)}"
                )
                blocks.append(
                    section(
                        f"*{escape_fit(deal['name'], 200)}* — {due}",
                        accessory=button("Log it", wl_blocks.OPEN_ACTION, str(deal["id"])),
                    )
                )
        else:
            blocks.append(section("*Deals waiting for a win/loss entry*\nNone. :tada:"))
        blocks.extend(_lead_blocks(rep.get("leads") or [], tz=tz, now=now))
        if rep["recent"]:
            lines = []
            for item in rep["recent"]:
                if item["acknowledged"]:
                    mark = ":white_check_mark: marketing closed the loop"
                elif item.get("in_loop", True):
                    mark = ":hourglass: waiting for marketing"
                else:
                    mark = ":inbox_tray: imported, not posted to marketing"
                late = "" if item.get("on_time", True) else " · logged late"
                lines.append(f"• {escape_fit(item['label'], 200)} — {mark}{late}")
            blocks.append(section("*Your last entries*\n" + "\n".join(lines)))
    if marketing is not None:
        if rep is not None:
            blocks.append({"type": "divider"})
        blocks.append(
            section(
                f"*{marketing['month']} so far*\n"
                f"Win rate *{pct(marketing['win_rate'])}* ({marketing['decided']} decided) · "
                f"Feedback response *{pct(marketing['feedback_response_rate'])}* · "
                f"Loops closed *{pct(marketing['acknowledged_rate'])}*"
            )
        )
        blocks.extend(_last_week_leads(marketing.get("leads")))
        waiting = marketing["waiting"]
        if waiting:
            blocks.append(
                section(
                    f"*Waiting for marketing to close the loop ({marketing['waiting_total']}),"
                    " oldest first*"
                )
            )
            for post in waiting:
                what = "Weekly feedback" if post["kind"] == PostKind.FEEDBACK else "Win/loss entry"
                link = (
                    f"<{permalink(link_base, post['channel'], post['ts'])}|{what}>"
                    if link_base
                    else what
                )
                blocks.append(
                    section(
                        f"{link} from {mention(post['author'])} · {_when(post['created_at'], tz)}",
                        accessory=button(
                            "Close the loop", fb_blocks.CLOSE_LOOP_ACTION, str(post["post_id"])
                        ),
                    )
                )
        else:
            blocks.append(section("*Waiting for marketing*\nEvery loop is closed. :tada:"))
    if rep is None and marketing is None:
        blocks.append(
            section(
                "Closeloop asks sales reps for weekly feedback and win/loss entries and brings "
                "them to marketing. You are in neither team yet; ask your Closeloop admin."
            )
        )
    blocks.append(context(f"Times in {tz.key}. Updated {_when(now, tz)}."))
    return {"type": "home", "blocks": blocks[:MAX_BLOCKS]}

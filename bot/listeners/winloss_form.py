"""The win/loss form: opened by ``/winloss``, a nudge's "Log win/loss", a post's "Edit" or
an escalation's "Log it"; submitted here (stored before the ack, posted for marketing)."""

from __future__ import annotations

import json
from datetime import date

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.blocks import winloss as wl_blocks
from bot.db import in_transaction, session_scope
from bot.home_tab import changed as homes_changed
from bot.listeners.forms import keeps_form_when_database_is_away, selected, value
from bot.people import today_for, user_zone
from bot.runtime import Runtime
from bot.services import competitors as competitor_svc
from bot.services import deal_input
from bot.services import winloss as wl_svc
from bot.services.errors import DomainError


def modal(
    rt: Runtime, *, user_id: str, deal_pk: int | None = None, entry_id: int | None = None
) -> dict:
    """The /winloss modal: blank, for a known deal (prefilled), or to edit an entry."""
    s = rt.settings
    with session_scope(rt.session_factory) as session:
        tz = user_zone(session, rt, user_id, fetch=True)
        today = rt.now().astimezone(tz).date()
        known = [c.name for c in competitor_svc.known(session)]
        prefill = None
        if deal_pk is not None and entry_id is None:
            deal = wl_svc.get_deal(session, deal_pk)
            wl_svc.check_may_log(deal, user_id=user_id, managers=s.sales_managers)
            entry_id = deal.entry.id if deal.entry is not None else None
            if entry_id is None:
                prefill = wl_blocks.Prefill(
                    deal_name=deal.name,
                    outcome=deal.outcome,
                    closed_on=deal.closed_at.astimezone(tz).date(),
                    amount=deal.amount,
                    source=deal.source,
                    crm_reason=deal.crm_reason,
                )
        if entry_id is not None:
            entry = wl_svc.entry_for_edit(
                session, entry_id=entry_id, user_id=user_id, managers=s.sales_managers, now=rt.now()
            )
            deal = entry.deal
            deal_pk = deal.id
            competitor = entry.competitor.name if entry.competitor else None
            if competitor and competitor not in known:
                known.insert(1, competitor)
            prefill = wl_blocks.Prefill(
                deal_name=deal.name,
                outcome=entry.outcome,
                reason=entry.reason,
                reason_category=entry.reason_category,
                competitor=competitor,
                insight=entry.insight,
                closed_on=deal.closed_at.astimezone(tz).date(),
                amount=deal.amount,
                source=deal.source,
                crm_reason=deal.crm_reason,
            )
        return wl_blocks.winloss_modal(
            categories=s.reason_categories,
            competitors=known,
            today=today,
            prefill=prefill,
            deal_pk=deal_pk,
            entry_id=entry_id,
        )


def open_winloss_modal(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Log win/loss" on a nudge or in /winloss list: the form, prefilled for that deal."""
    ack()
    context["open_modal"](
        _open_winloss, body, client, context["rt"], deal_pk=int(body["actions"][0]["value"])
    )


def edit_winloss(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Edit" on a win/loss post: the author (or a manager) edits for 7 days."""
    ack()
    context["open_modal"](
        _open_winloss, body, client, context["rt"], entry_id=int(body["actions"][0]["value"])
    )


def _open_winloss(body: dict, client: WebClient, rt: Runtime, **which) -> None:
    user_id = body["user"]["id"]
    try:
        view = modal(rt, user_id=user_id, **which)
    except DomainError as err:
        channel = (body.get("channel") or {}).get("id")
        if channel and not channel.startswith("D"):  # an answer to the click, to them alone
            client.chat_postEphemeral(channel=channel, user=user_id, text=str(err))
        else:
            rt.tell(user_id, str(err))
        return
    client.views_open(trigger_id=body["trigger_id"], view=view)


@keeps_form_when_database_is_away("reason", "entry")
def submit_winloss(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """Refuse shorthand reasons inline, store, then have it posted for marketing."""
    rt: Runtime = context["rt"]
    s = rt.settings
    user_id = body["user"]["id"]
    meta = json.loads(view.get("private_metadata") or "{}")
    if meta.get("deal") is not None:  # someone else's deal: refused before anything is read
        try:
            with session_scope(rt.session_factory) as session:
                deal = wl_svc.get_deal(session, int(meta["deal"]))
                wl_svc.check_may_log(deal, user_id=user_id, managers=s.sales_managers)
        except DomainError as err:
            ack(response_action="errors", errors={"reason": str(err)})
            return
    values = view["state"]["values"]
    errors: dict[str, str] = {}
    try:
        amount = deal_input.parse_amount(value(view, "amount"))
    except DomainError:
        amount, errors["amount"] = None, "Please enter a number."
    today = today_for(rt, user_id)
    closed_text = ((values.get("closed_on") or {}).get("closed_on") or {}).get("selected_date")
    closed_on = date.fromisoformat(closed_text) if closed_text else today
    picked = selected(view, "competitor")
    typed = value(view, "competitor_new").strip()
    entry_in = wl_svc.EntryIn(
        deal_name=value(view, "deal_name"),
        outcome=selected(view, "outcome") or "",
        reason=value(view, "reason"),
        reason_category=selected(view, "reason_category"),
        competitor=typed or (None if picked in (None, wl_blocks.NONE_VALUE) else picked),
        insight=value(view, "insight"),
        closed_on=closed_on,
        amount=amount,
        source=value(view, "source") or None,
        deal_pk=meta.get("deal"),
    )
    errors.update(wl_svc.validate_entry(entry_in, categories=s.reason_categories, today=today))
    if errors:
        ack(response_action="errors", errors=errors)
        return

    def save(session) -> str | None:
        entry, _post, _edited = wl_svc.log_entry(
            session,
            entry_in=entry_in,
            user_id=user_id,
            managers=s.sales_managers,
            categories=s.reason_categories,
            deadline_hours=s.winloss_deadline_hours,
            tz=user_zone(session, rt, user_id),
            channel=s.winloss_channel,
            now=rt.now(),
            writeback=s.writeback_crms,
        )
        return entry.deal.owner_user_id

    try:
        owner = in_transaction(rt.session_factory, save)
    except DomainError as err:
        ack(response_action="errors", errors={"reason": str(err)})
        return
    ack()
    rt.send_soon()
    context["later"](homes_changed, rt, user_id, owner, marketing=True)


def register(app: App) -> None:
    app.view(wl_blocks.SUBMIT_CALLBACK)(submit_winloss)
    app.action(wl_blocks.OPEN_ACTION)(open_winloss_modal)
    app.action(wl_blocks.EDIT_ACTION)(edit_winloss)

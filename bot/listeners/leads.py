"""The lead hand-off loop in Slack: ``/lead`` (marketing hands a lead over, in a modal), the
owner's *Accept* / *Not ready* / *Reject…* buttons, the reject modal, ``/lead list``.
Who may do what is decided in bot.services.leads."""

from __future__ import annotations

import json
import logging

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.blocks import leads as lead_blocks
from bot.blocks.winloss import local_time
from bot.db import in_transaction, session_scope
from bot.home_tab import changed as homes_changed
from bot.jobs.leads import nudge_new_lead
from bot.listeners.forms import keeps_form_when_database_is_away, selected, value
from bot.models import LeadStatus
from bot.runtime import Runtime
from bot.services import definition as definition_svc
from bot.services import leads as lead_svc
from bot.services.errors import DomainError
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

MARKETING_CACHE_SECONDS = 60
HELP = (
    "*/lead* hands a lead to sales (marketing only): who, company, source, campaign, the "
    "sales owner and what marketing knows. The owner is asked to rate it within the SLA.\n"
    "*/lead list* shows the leads waiting for your rating."
)
NOT_CHECKED = (
    "Slack did not say in time whether you are in marketing, so the lead was not handed "
    "over. Your text is still here; please submit it again in a minute."
)


def _answer(body: dict, client: WebClient, rt: Runtime, text: str) -> None:
    """Tell the person who clicked: in the channel, to them alone, or in a DM."""
    user_id = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id")
    if channel and not channel.startswith("D"):
        try:
            client.chat_postEphemeral(channel=channel, user=user_id, text=text)
            return
        except SLACK_ERRORS:  # the bot not in that channel, Slack away: a DM instead
            log.warning("could not answer %s in %s; telling them in a DM", user_id, channel)
    rt.tell(user_id, text)


# --- rating -------------------------------------------------------------------------------


def rate_button(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """*Accept* / *Not ready*: recorded after the ack; the DM then shows the rating."""
    ack()
    action = body["actions"][0]
    rating = (
        LeadStatus.ACCEPTED
        if action["action_id"] == lead_blocks.ACCEPT_ACTION
        else LeadStatus.NOT_READY
    )
    context["later"](_rate, body, client, context["rt"], int(action["value"]), rating)


def store_rating(
    rt: Runtime,
    *,
    lead_pk: int,
    rating: str,
    user_id: str,
    reason: str | None = None,
    note: str | None = None,
) -> str | None:
    """Record the rating in its own transaction (DomainError: refused); the lead's owner."""
    s = rt.settings

    def store(session) -> str | None:
        lead_svc.rate(
            session,
            lead_pk=lead_pk,
            rating=rating,
            reason=reason,
            note=note,
            user_id=user_id,
            managers=s.sales_managers,
            reasons=s.leads.reject_reasons,
            now=rt.now(),
            writeback=s.lead_writeback_crms,
        )
        return lead_svc.get_lead(session, lead_pk).owner_user_id

    return in_transaction(rt.session_factory, store)


def _rate(body: dict, client: WebClient, rt: Runtime, lead_pk: int, rating: str) -> None:
    user_id = body["user"]["id"]
    try:
        owner = store_rating(rt, lead_pk=lead_pk, rating=rating, user_id=user_id)
    except DomainError as err:
        _answer(body, client, rt, str(err))
        return
    rt.send_soon()
    homes_changed(rt, user_id, owner, marketing=True)


def open_reject(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """*Reject…*: the modal with the taxonomy (the owner or a sales manager only)."""
    ack()  # first: the trigger_id lives 3 seconds from the click
    context["open_modal"](_open_reject, body, client, context["rt"])


def _open_reject(body: dict, client: WebClient, rt: Runtime) -> None:
    user_id = body["user"]["id"]
    lead_pk = int(body["actions"][0]["value"])
    try:
        with session_scope(rt.session_factory) as session:
            lead = lead_svc.get_lead(session, lead_pk)
            lead_svc.check_may_rate(lead, user_id=user_id, managers=rt.settings.sales_managers)
            person = lead.person
    except DomainError as err:
        _answer(body, client, rt, str(err))
        return
    view = lead_blocks.reject_modal(
        lead_pk=lead_pk, person=person, reasons=rt.settings.leads.reject_reasons
    )
    client.views_open(trigger_id=body["trigger_id"], view=view)


@keeps_form_when_database_is_away("note", "rating")
def submit_reject(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """The reject modal: the reason is required; stored before the ack."""
    rt: Runtime = context["rt"]
    s = rt.settings
    user_id = body["user"]["id"]
    lead_pk = int(json.loads(view.get("private_metadata") or "{}").get("lead", 0))
    reason = selected(view, "reason")
    if not reason or reason not in s.leads.reject_reasons:
        ack(response_action="errors", errors={"reason": "Please choose why."})
        return
    try:
        owner = store_rating(
            rt,
            lead_pk=lead_pk,
            rating=LeadStatus.REJECTED,
            reason=reason,
            note=value(view, "note"),
            user_id=user_id,
        )
    except DomainError as err:
        ack(response_action="errors", errors={"note": str(err)})
        return
    ack()
    rt.send_soon()
    context["later"](homes_changed, rt, user_id, owner, marketing=True)


# --- /lead --------------------------------------------------------------------------------


def lead_command(ack: Ack, command: dict, client: WebClient, context: dict) -> None:
    """``/lead``: the hand-off modal (marketing only); ``/lead list``; ``/lead help``."""
    rt: Runtime = context["rt"]
    text = (command.get("text") or "").strip().lower()
    user_id = command["user_id"]
    if text == "list":
        message, blocks = waiting_list(rt, user_id=user_id)
        ack(text=message, blocks=blocks)
        return
    if text:
        ack(text=HELP)
        return
    ack()  # first: the trigger_id lives 3 seconds from the command
    context["open_modal"](_open_hand_off, command, client, rt)


def _open_hand_off(command: dict, client: WebClient, rt: Runtime) -> None:
    user_id = command["user_id"]
    try:
        marketing = rt.directory.marketing_ids(max_age=MARKETING_CACHE_SECONDS)
        lead_svc.check_may_hand_off(user_id, marketing)
    except DomainError as err:
        rt.tell(user_id, str(err))
        return
    except SLACK_ERRORS:
        log.exception("could not read marketing's members for %s's /lead", user_id)
        rt.tell(user_id, "Slack did not answer in time; please try /lead again in a minute.")
        return
    with session_scope(rt.session_factory) as session:
        definition = definition_svc.current(session)
        version = definition.version if definition else None
    view = lead_blocks.hand_off_modal(definition_version=version)
    client.views_open(trigger_id=command["trigger_id"], view=view)


@keeps_form_when_database_is_away("context", "lead")
def submit_hand_off(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """The hand-off modal: checked, stored before the ack, the owner's DM after it."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    values = view["state"]["values"]
    owner = ((values.get("owner") or {}).get("owner") or {}).get("selected_user")
    errors: dict[str, str] = {}
    for required in ("person", "company", "source"):
        if not value(view, required).strip():
            errors[required] = "Please fill this in."
    email = value(view, "email").strip() or None
    if email and not lead_svc.EMAIL.match(email):
        errors["email"] = "That is not an email address."
    if not owner:
        errors["owner"] = "Please choose who follows up."
    if errors or not owner:
        ack(response_action="errors", errors=errors)
        return
    try:
        marketing = rt.directory.marketing_ids()  # fresh: membership is checked as it stores
    except SLACK_ERRORS:
        log.exception("could not read marketing's members for %s's lead", user_id)
        ack(response_action="errors", errors={"context": NOT_CHECKED})
        return
    lead_in = lead_svc.LeadIn(
        # The modal's own ID: a submission that arrives twice (a retry) is one lead.
        external_id=f"slack:{view['id']}" if view.get("id") else None,
        person=value(view, "person").strip(),
        owner_user_id=owner,
        email=email.lower() if email else None,
        company=value(view, "company").strip() or None,
        title=value(view, "title").strip() or None,
        source=value(view, "source").strip() or None,
        campaign=value(view, "campaign").strip() or None,
        context=value(view, "context").strip() or None,
        handed_by=user_id,
    )

    def store(session) -> int:
        lead = lead_svc.hand_off(
            session,
            lead=lead_in,
            by=user_id,
            marketing_ids=marketing,
            s=rt.settings.leads,
            default_tz=rt.settings.default_timezone,
            now=rt.now(),
        )
        return lead.id

    try:
        lead_pk = in_transaction(rt.session_factory, store)
    except DomainError as err:
        ack(response_action="errors", errors={"context": str(err)})
        return
    ack()
    rt.send_soon()  # the marketer's notice
    context["later"](nudge_new_lead, rt, lead_pk)  # the owner's DM


def waiting_list(rt: Runtime, *, user_id: str) -> tuple[str, list[dict]]:
    """The caller's leads waiting for a rating (a sales manager's: everyone's)."""
    manager = user_id in rt.settings.sales_managers
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        tz = lead_svc.owner_zone(session, user_id, rt.settings.default_timezone)
        rows = [
            (
                lead.id,
                lead_blocks.who(lead_blocks.LeadView(lead.id, lead.person, lead.company)),
                local_time(lead.sla_due_at, tz),
                lead.sla_due_at <= now,
            )
            for lead in lead_svc.waiting_leads(session, user_id=user_id, manager=manager)
        ]
    return lead_blocks.waiting_list(rows)


def register(app: App) -> None:
    app.command("/lead")(lead_command)
    app.view(lead_blocks.HAND_OFF_CALLBACK)(submit_hand_off)
    app.view(lead_blocks.REJECT_CALLBACK)(submit_reject)
    app.action(lead_blocks.ACCEPT_ACTION)(rate_button)
    app.action(lead_blocks.NOT_READY_ACTION)(rate_button)
    app.action(lead_blocks.REJECT_ACTION)(open_reject)

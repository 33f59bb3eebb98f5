"""``/closeloop definition [history | edit | <version>]``, the editor's submission, and the
review DM's *Still right* / *Edit* buttons."""

from __future__ import annotations

import json
import logging
import re

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.blocks import definition as def_blocks
from bot.db import in_transaction, session_scope
from bot.home_tab import changed as homes_changed
from bot.listeners.forms import keeps_form_when_database_is_away, value
from bot.runtime import Runtime
from bot.services import definition as definition_svc
from bot.services.errors import DomainError

log = logging.getLogger(__name__)


def run(
    ack: Ack, client: WebClient, context: dict, *, user_id: str, trigger_id: str, text: str
) -> None:
    """``/closeloop definition ...``: read by anyone (an answer to them alone), edited by
    admins and owners (refused at once for anyone else, before a modal opens)."""
    rt: Runtime = context["rt"]
    word = " ".join(text.split()).lower()

    def answer(found: tuple[str, list[dict]]) -> None:
        ack(text=found[0], blocks=found[1] or None)

    if word in ("", "show"):
        answer(shown(rt))
    elif word == "history":
        answer(history(rt))
    elif re.fullmatch(r"(?:show )?v?\d{1,6}", word):
        answer(shown(rt, version=int(re.sub(r"\D", "", word))))
    elif word == "edit":
        if not definition_svc.may_edit(rt.settings, user_id):
            log.warning("%s may not edit the definition: refused", user_id)
            try:
                definition_svc.check_may_edit(rt.settings, user_id)
            except DomainError as err:
                ack(text=str(err))
            return
        ack()  # first: the trigger_id lives 3 seconds from the command
        context["open_modal"](lambda: client.views_open(trigger_id=trigger_id, view=modal(rt)))
    else:
        ack(text=def_blocks.HELP)


def shown(rt: Runtime, *, version: int | None = None) -> tuple[str, list[dict]]:
    with session_scope(rt.session_factory) as session:
        latest = definition_svc.current(session)
        if version is None:
            defn = latest
        else:
            try:
                defn = definition_svc.get(session, version)
            except DomainError as err:
                return str(err), []
        if defn is None:
            return def_blocks.definition_message(version=None)
        return def_blocks.definition_message(
            version=defn.version,
            summary=defn.summary,
            sections=defn.sections,
            note=defn.note,
            author=defn.author,
            created_at=defn.created_at,
            latest=latest.version if latest else None,
        )


def history(rt: Runtime) -> tuple[str, list[dict]]:
    with session_scope(rt.session_factory) as session:
        rows = [
            {"version": d.version, "author": d.author, "created_at": d.created_at, "note": d.note}
            for d in definition_svc.history(session)
        ]
    return def_blocks.history_message(rows)


def modal(rt: Runtime) -> dict:
    """The editor, filled with the version in force."""
    with session_scope(rt.session_factory) as session:
        defn = definition_svc.current(session)
        if defn is None:
            return def_blocks.edit_modal(version=None)
        return def_blocks.edit_modal(
            version=defn.version, summary=defn.summary, sections=defn.sections
        )


@keeps_form_when_database_is_away(def_blocks.NOTE_BLOCK, "definition")
def submit(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """Inline errors keep the editor open; a saved version is announced through the outbox."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    meta = json.loads(view.get("private_metadata") or "{}")
    summary = value(view, def_blocks.SUMMARY_BLOCK)
    sections = {key: value(view, key) for key, _ in definition_svc.SECTIONS}
    note = value(view, def_blocks.NOTE_BLOCK)
    if not definition_svc.may_edit(rt.settings, user_id):
        try:
            definition_svc.check_may_edit(rt.settings, user_id)
        except DomainError as err:
            ack(response_action="errors", errors={def_blocks.NOTE_BLOCK: str(err)})
            return
    errors = definition_svc.problems(
        summary=summary, sections={k: v.strip() for k, v in sections.items()}, note=note
    )
    if errors:
        ack(response_action="errors", errors=errors)
        return

    def save(session) -> int:
        return definition_svc.save(
            session,
            summary=summary,
            sections=sections,
            note=note,
            author=user_id,
            now=rt.now(),
            settings=rt.settings,
            base_version=meta.get("base"),
        ).version

    try:
        version = in_transaction(rt.session_factory, save)
    except DomainError as err:
        ack(response_action="errors", errors={def_blocks.NOTE_BLOCK: str(err)})
        return
    ack()
    log.info("%s saved version %d of the definition", user_id, version)
    rt.send_soon()
    context["later"](homes_changed, rt, *rt.settings.admin_users)


def still_right(ack: Ack, body: dict, context: dict) -> None:
    """*Still right* on the review DM: the review recorded after the ack (first answer
    stands)."""
    ack()
    rt: Runtime = context["rt"]
    context["later"](_still_right, rt, body["user"]["id"], body["actions"][0]["value"])


def _still_right(rt: Runtime, user_id: str, period: str) -> None:
    def record(session) -> bool:
        return definition_svc.reviewed(
            session,
            period=period,
            by=user_id,
            outcome=definition_svc.STILL_RIGHT,
            now=rt.now(),
            settings=rt.settings,
        )

    try:
        recorded = in_transaction(rt.session_factory, record)
    except DomainError as err:  # not an owner or admin: told privately, nothing recorded
        rt.tell(user_id, str(err))
        return
    if recorded:
        log.info("%s: the definition is still right (%s review)", user_id, period)
        rt.send_soon()
        homes_changed(rt, *rt.settings.admin_users)


def edit_from_review(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """*Edit* on the review DM: the editor (saving it answers the review)."""
    ack()
    rt: Runtime = context["rt"]
    user_id, trigger_id = body["user"]["id"], body["trigger_id"]
    definition_svc.check_may_edit(rt.settings, user_id)  # NotAllowed: told by the handler
    context["open_modal"](lambda: client.views_open(trigger_id=trigger_id, view=modal(rt)))


def register(app: App) -> None:
    app.view(def_blocks.SUBMIT_CALLBACK)(submit)
    app.action(def_blocks.STILL_RIGHT_ACTION)(still_right)
    app.action(def_blocks.EDIT_ACTION)(edit_from_review)

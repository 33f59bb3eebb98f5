"""Block Kit builders as plain functions: escaping, limits, shapes Slack accepts."""

from __future__ import annotations

import json
from datetime import date

from bot.blocks import feedback as fb
from bot.blocks.elements import escape, escape_fit, quoted_sections
from tests.fakeslack import validate_blocks, validate_view

HOSTILE = "<!channel> <!here> <@U123> <#C1|general> & <https://evil|click>"


def test_escape_turns_every_control_character_into_an_entity():
    assert escape(HOSTILE) == (
        "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &lt;#C1|general&gt; &amp; "
        "&lt;https://evil|click&gt;"
    )
    assert escape(None) == "" and escape("") == ""


def test_escape_fit_never_splits_an_entity():
    text = "&" * 100
    fitted = escape_fit(text, 50)
    assert len(fitted) <= 50 and fitted.endswith("…")
    assert fitted[:-1].replace("&amp;", "") == ""


def test_quoted_sections_keep_all_of_a_long_answer():
    text = ("a&b <c> " * 400)[:3000]
    sections = quoted_sections("*Title*", text)
    assert all(len(s["text"]["text"]) <= 3000 for s in sections)
    joined = "".join(s["text"]["text"] for s in sections)
    assert joined.count("&amp;") == text.count("&")
    assert joined.count("&lt;c&gt;") == text.count("<c>")
    assert "<" not in joined


def test_feedback_post_escapes_everything_the_rep_typed():
    text, blocks = fb.feedback_post(
        post_id=7,
        rep_id="UANA",
        week_start=date(2026, 11, 16),
        worked=HOSTILE,
        fell_flat=HOSTILE,
        insight=HOSTILE,
        campaign=HOSTILE,
        edited=False,
        acknowledged_by=[],
    )
    rendered = json.dumps(blocks) + text
    for raw in ("<!channel>", "<!here>", "<@U123>", "<#C1", "<https://evil"):
        assert raw not in rendered
    assert "<@UANA>" in rendered  # our own mention of the rep stays a mention
    assert validate_blocks(blocks, "/blocks", max_blocks=50) == []
    button = blocks[-1]["elements"][0]
    assert (button["action_id"], button["value"]) == (fb.CLOSE_LOOP_ACTION, "7")


def test_feedback_post_with_three_maximal_answers_fits_in_a_message():
    long = "&" * 3000
    _text, blocks = fb.feedback_post(
        post_id=1,
        rep_id="U1",
        week_start=date(2026, 11, 16),
        worked=long,
        fell_flat=long,
        insight=long,
        campaign="c" * 255,
        edited=True,
        acknowledged_by=["UMIA", "UMIA"],
    )
    assert validate_blocks(blocks, "/blocks", max_blocks=50) == []
    assert "Loop closed by <@UMIA>" in json.dumps(blocks)


def test_prompt_message_and_modal_are_valid_for_slack():
    _text, blocks = fb.prompt_message(prompt_id=3, week_start=date(2026, 11, 16))
    assert validate_blocks(blocks, "/blocks", max_blocks=50) == []
    ids = [e["action_id"] for e in blocks[2]["elements"]]
    assert ids == [fb.OPEN_ACTION, fb.SKIP_NOTHING_ACTION, fb.SKIP_OUT_ACTION]
    view = fb.feedback_modal(
        prompt_id=3,
        week_start=date(2026, 11, 16),
        answer={"worked": "w", "fell_flat": "f", "insight": "i", "campaign": None},
    )
    assert validate_view(view, allowed_types=("modal",)) == []
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert all(
        inputs[k]["element"]["max_length"] == 3000 for k in ("worked", "fell_flat", "insight")
    )
    assert inputs["campaign"]["optional"] is True
    assert json.loads(view["private_metadata"]) == {"prompt_id": 3}


def test_ack_messages_quote_the_note_safely():
    text, _ = fb.ack_thread_reply(marketer_id="UMIA", note="pausing <!channel> & co", emoji=None)
    assert "&lt;!channel&gt; &amp; co" in text and "<!channel>" not in text
    text, _ = fb.ack_rep_dm(marketer_id="UMIA", note=None, channel="C1", subject="your x")
    assert text == "<@UMIA> from marketing read and acknowledged your x in <#C1>."

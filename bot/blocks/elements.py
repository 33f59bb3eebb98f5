"""Block Kit pieces every builder uses: escaping, mentions, sections, buttons."""

from __future__ import annotations

from bot.models import FORMER_COLLEAGUE, is_forgotten


def escape(text: str | None) -> str:
    """Escape user text for mrkdwn so ``<!channel>``, ``<@U1>`` and ``&`` show literally."""
    if not text:
        return ""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user_id: str | None, *, nobody: str = "someone") -> str:
    """``<@U123>`` for a Slack user; someone ``closeloop forget-user`` forgot is named by no
    ID at all ("a former colleague")."""
    if not user_id:
        return nobody
    if is_forgotten(user_id):
        return FORMER_COLLEAGUE
    return f"<@{user_id}>"


def plain(text: str, *, emoji: bool = True) -> dict:
    return {"type": "plain_text", "text": text, "emoji": emoji}


def mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def section(text: str, **extra) -> dict:
    return {"type": "section", "text": mrkdwn(text[:3000]), **extra}


def context(text: str) -> dict:
    return {"type": "context", "elements": [mrkdwn(text[:3000])]}


def button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict:
    element = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style:
        element["style"] = style
    return element


def actions(block_id: str, *elements: dict) -> dict:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def escape_fit(text: str | None, limit: int) -> str:
    """``escape(text)`` cut (with an ellipsis) so it is at most ``limit`` characters."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out, size = [], 0
    for char in text or "":
        piece = escape(char)
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + "…"


def quote(text: str | None, limit: int = 2900) -> str:
    """Escaped user text as a mrkdwn block quote (every line quoted), at most ~``limit``."""
    body = escape_fit(text, limit - 100)
    return "\n".join(f">{line}" for line in body.split("\n"))[:limit]


def _safe_cut(text: str, limit: int) -> int:
    """A cut position at most ``limit`` that does not split an ``&amp;``-style entity."""
    cut = limit
    amp = text.rfind("&", max(0, cut - 5), cut)
    if amp != -1 and ";" not in text[amp:cut]:
        cut = amp
    return max(cut, 1)


def quoted_sections(title: str, text: str | None, *, limit: int = 3000) -> list[dict]:
    """``title`` and the user's whole text, escaped and block-quoted, in as many section
    blocks as it needs (a section holds 3,000 characters; nothing is cut off)."""
    lines = [">" + line for line in escape(text or "").split("\n")]
    sections: list[str] = []
    current = title
    for line in lines:
        while line:
            room = limit - len(current) - 1
            if len(line) <= room:
                current = f"{current}\n{line}" if current else line
                line = ""
            elif room > 200 or not current:
                cut = _safe_cut(line, room)
                current = f"{current}\n{line[:cut]}" if current else line[:cut]
                line = ">" + line[cut:]
                sections.append(current)
                current = ""
            else:
                sections.append(current)
                current = ""
    if current:
        sections.append(current)
    return [section(chunk) for chunk in sections]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

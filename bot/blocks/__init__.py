"""Pure Block Kit builders: data in, dicts out. User text is always escaped here."""

from __future__ import annotations


def escape(text: str | None) -> str:
    """Escape user text for mrkdwn so ``<!channel>``, ``<@U1>`` and ``&`` show literally."""
    if not text:
        return ""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

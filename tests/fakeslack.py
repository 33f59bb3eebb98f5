"""A fake Slack Web API server for the test suite.

``FakeSlack`` runs a real HTTP server on 127.0.0.1 that answers the Web API methods the bot
uses, with the response shapes and error codes of Slack's published OpenAPI spec and docs
(see /work/shared/slack-reference). Point a ``slack_sdk.WebClient`` at it::

    with FakeSlack(bot_token="xoxb-test-token") as slack:
        slack.add_user("U1", tz="Europe/Berlin", name="ana", email="ana@example.com")
        slack.add_channel("C1", name="marketing-feedback")
        client = WebClient(token="xoxb-test-token", base_url=slack.url)
        client.chat_postMessage(channel="C1", text="hi")
        (call,) = slack.calls_to("chat.postMessage")

Messages are stored per channel; ``conversations.history`` lists the top-level ones (newest
first) and ``conversations.replies`` one thread (its parent first, then the replies), both
cursor-paginated, each with message metadata only when ``include_all_metadata`` is set.
``history_page_cap`` makes history pages shorter than ``limit``, as Slack may.

Every request is recorded as a :class:`Call`; ``fail_next`` injects faults (429, 5xx,
``ok: false`` errors, dropped connections, delays); ``set_latency`` makes every Web API call
(or chosen methods) slow. New methods are added with :meth:`FakeSlack.register`.

Scopes: the bot token is granted exactly the bot scopes manifest.yml asks for (read when the
fake starts; ``scopes=`` or ``manifest=`` give others, ``granted`` may be changed later). A
bot-token call needs its method's scope (``bot.slack.scopes.METHOD_SCOPES``, taken from
Slack's method reference); without it Slack's answer comes back, HTTP 200: ``{"ok": false,
"error": "missing_scope", "needed": "files:write", "provided": "chat:write,..."}``. Where a
method takes one scope per kind of conversation (conversations.*), the one for the
conversation's kind is needed (an unknown conversation: any one will do; ``needed`` names the
first). Every call with a valid bot token answers with the ``x-oauth-scopes`` header (the
granted scopes, comma-separated) and ``x-accepted-oauth-scopes``, as Slack does.
``revoke_token()`` makes the bot token answer ``token_revoked`` from then on.

``apps.connections.open`` (Socket Mode) takes the app-level token (``app_token``, ``xapp-...``)
from the Authorization header only, and answers the WebSocket URL of ``socket_url``: a string,
or a callable such as ``FakeSocketMode.issue_url`` (tests/fakesocket.py) called once per
request, so each answer carries a fresh ticket.

File uploads follow the v2 flow ``WebClient.files_upload_v2`` drives:
``files.getUploadURLExternal`` answers ``upload_url`` = ``<base>/upload/v1/<opaque>`` on this
server; a ``POST`` of the raw bytes there (no token; recorded as a :class:`Call` with method
``"upload"``, see :data:`UPLOAD_METHOD`) answers ``200 OK - <bytes>`` as Slack does; then
``files.completeUploadExternal`` turns the uploads into files, shared into channels as a
message with ``files: [...]``. ``FakeSlack.files`` shows the completed files with their bytes.
``fail_next("upload", status=500)`` (or ``drop``/``delay``) breaks the raw upload step.

Slash-command ``response_url``s: ``new_response_url()`` issues one on this server (the harness
puts it in every command it sends); a JSON ``POST`` there (no token) is recorded as a
:class:`Call` with method ``"response_url"`` (:data:`RESPONSE_URL_METHOD`) and answered
``200 ok`` as Slack does, at most 5 times per URL; an unknown or used-up URL gets 404.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import logging
import mimetypes
import random
import re
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from math import ceil
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.slack import scopes as slack_scopes

__all__ = [
    "Call",
    "FakeSlack",
    "SlackError",
    "DEFAULT_APP_TOKEN",
    "UPLOAD_METHOD",
    "RESPONSE_URL_METHOD",
]

log = logging.getLogger(__name__)

TEAM_ID = "T0001"
TEAM_NAME = "Closeloop Test"
TEAM_DOMAIN = "closeloop-test"
BOT_USER_ID = "UBOT"
BOT_USER_NAME = "closeloop"
BOT_ID = "B0001"
APP_ID = "A0001"
DEFAULT_APP_TOKEN = "xapp-1-A0001-1-fakeapptoken"
# Base of chat.getPermalink and file permalinks (real Slack: the workspace's own domain).
PERMALINK_BASE = "https://fake.slack.com"
# Call.method (and fail_next key) of a raw POST to an upload URL.
UPLOAD_METHOD = "upload"
UPLOAD_PATH = "/upload/v1/"
# Call.method of a POST to a slash command's response_url (see new_response_url).
RESPONSE_URL_METHOD = "response_url"
RESPONSE_PATH = "/commands/"
RESPONSE_URL_USES = 5  # Slack: up to 5 responses within 30 minutes
MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yml"

Params = dict[str, Any]
Handler = Callable[[Params], dict[str, Any]]

# Form fields that carry JSON; they are decoded for handlers and for Call.params.
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "files")
_TS_RE = re.compile(r"^\d+\.\d+$")


# --------------------------------------------------------------------------- records


@dataclass
class Call:
    """One request the fake received (failed and dropped ones included)."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    response: dict[str, Any] | None
    status: int  # HTTP status; 0 when the connection was dropped without an answer
    at: float = field(default_factory=time.monotonic)  # when it was answered (monotonic)

    @property
    def ok(self) -> bool:
        """True when the fake answered ``{"ok": true, ...}``."""
        return self.response is not None and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        """The ``error`` code answered, if any."""
        return None if self.response is None else self.response.get("error")


class SlackError(Exception):
    """Raised by a method handler to answer ``{"ok": false, "error": code, **extra}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _invalid_arguments(*messages: str) -> SlackError:
    """Slack's ``invalid_arguments`` answer with ``response_metadata.messages``."""
    return SlackError("invalid_arguments", response_metadata={"messages": list(messages)})


@dataclass
class _Fault:
    error: str | None = None
    status: int | None = None
    retry_after: int | None = None
    drop: bool = False
    delay: float | None = None


@dataclass
class _Bucket:
    rate: float
    burst: int
    tokens: float
    last: float


@dataclass
class _Reply:
    status: int = 200
    body: dict[str, Any] | None = None  # sent as JSON unless ``raw`` is set; recorded in Call
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    raw: bytes | None = None  # a non-JSON answer (the upload URL's "OK - 12")
    content_type: str = "application/json; charset=utf-8"


@dataclass
class _ParsedRequest:
    query: dict[str, Any]
    form: dict[str, Any]
    json: dict[str, Any]
    error: str | None = None
    json_without_charset: bool = False


@dataclass
class _Method:
    handler: Handler
    accepts_json: bool
    token: str = "bot"  # "bot": the bot token; "app": the app-level token, header only
    scopes: tuple[str, ...] = ()  # as bot.slack.scopes.METHOD_SCOPES (any one of several)


@dataclass
class _Upload:
    """One files.getUploadURLExternal ticket and, once POSTed, its bytes."""

    file_id: str
    token: str  # the opaque last part of the upload URL
    filename: str
    length: int  # as declared to files.getUploadURLExternal
    alt_txt: str | None
    snippet_type: str | None
    content: bytes | None = None  # None until the bytes were POSTed to the upload URL
    completed: bool = False


@dataclass
class _User:
    id: str
    name: str
    real_name: str
    display_name: str
    tz: str | None
    email: str | None
    is_bot: bool
    deleted: bool
    bot_id: str | None = None


@dataclass
class _Channel:
    id: str
    name: str
    is_member: bool = True
    is_im: bool = False
    is_private: bool = False
    user: str | None = None  # the other member of an IM


# --------------------------------------------------------------------------- parsing


def _decode_json_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Decode JSON-carrying fields (``blocks``, ``view``...) that arrived as strings."""
    out = dict(values)
    for key in _JSON_FIELDS:
        raw = out.get(key)
        if isinstance(raw, str):
            try:
                out[key] = json.loads(raw)
            except ValueError:
                pass  # left as a string; the handler answers *_format / invalid_arguments
    return out


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("not multipart")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        form[str(name)] = payload if part.get_filename() else payload.decode("utf-8", "replace")
    return form


def _parse_request(query: str, headers: dict[str, str], body: bytes) -> _ParsedRequest:
    """Split a request into query, form and JSON parameters like Slack reads them."""
    parsed = _ParsedRequest(query=dict(parse_qsl(query, keep_blank_values=True)), form={}, json={})
    if not body:
        return parsed
    content_type = headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/json":
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict):
                parsed.error = "json_not_object"
            else:
                parsed.json = data
                parsed.json_without_charset = "charset" not in content_type.lower()
        elif media == "application/x-www-form-urlencoded":
            parsed.form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        elif media == "multipart/form-data":
            parsed.form = _parse_multipart(content_type, body)
        elif media == "":
            parsed.error = "missing_post_type"
        else:
            parsed.error = "invalid_post_type"
    except UnicodeDecodeError:
        parsed.error = "invalid_charset"
    except ValueError:
        parsed.error = "invalid_json" if media == "application/json" else "invalid_form_data"
    return parsed


def _str_param(params: Params, name: str) -> str | None:
    """A parameter as a non-empty string, or None."""
    value = params.get(name)
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text or None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _ts_micros(ts: str) -> int:
    """A message ts ("1700000000.000100") as whole microseconds."""
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _cursor_value(cursor: str, prefix: str) -> str:
    """What follows ``prefix`` in a base64 cursor; ``invalid_cursor`` for anything else."""
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise SlackError("invalid_cursor") from None
    if not decoded.startswith(prefix):
        raise SlackError("invalid_cursor")
    return decoded.removeprefix(prefix)


def _cursor_for(message: dict[str, Any]) -> str:
    """An opaque ``next_cursor`` resuming at ``message``, shaped like Slack's
    (base64 of ``next_ts:<ts in microseconds>``)."""
    return base64.b64encode(f"next_ts:{_ts_micros(message['ts'])}".encode()).decode()


# --------------------------------------------------------------------------- file uploads

# files.completeUploadExternal's channel_id schema is ^[CGDZ][A-Z0-9]{8,}$ (bolt-js#2115); the
# length rule is not enforced so the short ids of tests (C1) keep working.
_UPLOAD_CHANNEL_RE = re.compile(r"^[CGDZ][A-Z0-9]+$")
_UPLOAD_CHANNEL_ERROR = (
    "[ERROR] input must match regex pattern: ^[CGDZ][A-Z0-9]{8,}$ [json-pointer:/channel_id]"
)
_SNIPPET_MAX_BYTES = 1024 * 1024  # "snippets are limited to 1MB"
_FILE_TYPES = {  # extension -> (filetype, pretty_type) where they differ from EXT / "EXT"
    "txt": ("text", "Plain Text"),
    "jpeg": ("jpg", "JPEG"),
    "md": ("markdown", "Markdown (raw)"),
    "py": ("python", "Python"),
}


def _text_reply(status: int, text: str, *, error: str | None = None) -> _Reply:
    """A plain-text answer (the upload URL); Call.response records ``{"ok", "body"}``."""
    record: dict[str, Any] = {"ok": status == 200, "body": text}
    if error:
        record["error"] = error
    return _Reply(
        status, record, raw=text.encode("utf-8"), content_type="text/plain; charset=utf-8"
    )


def _upload_content(headers: dict[str, str], body: bytes) -> bytes:
    """The file bytes of a POST to an upload URL: the raw body (what slack_sdk sends), or
    the (first) file part of a multipart form, which Slack also accepts."""
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        return body  # urllib labels raw bytes x-www-form-urlencoded; Slack ignores that
    try:
        form = _parse_multipart(content_type, body)
    except ValueError:
        return body
    parts = [v for v in form.values() if isinstance(v, bytes)] or [
        str(v).encode("utf-8") for v in form.values()
    ]
    return parts[0] if parts else body


def _parse_length(value: Any) -> int | None:
    """files.getUploadURLExternal ``length`` as an int; None when it is no integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _file_type(filename: str, snippet_type: str | None) -> tuple[str, str, str]:
    """(mimetype, filetype, pretty_type) of an uploaded file, guessed from its name."""
    if snippet_type:
        return "text/plain", snippet_type, snippet_type.capitalize()
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    mimetype = mimetypes.guess_type(filename)[0] or (
        "text/plain" if ext == "txt" else "application/octet-stream"
    )
    filetype, pretty = _FILE_TYPES.get(ext, (ext or "binary", ext.upper() or "Binary"))
    return mimetype, filetype, pretty


# --------------------------------------------------------------------------- Block Kit


def _too_long(limit: int, ptr: str) -> str:
    # Slack words it "less than limit+1", e.g. "must be less than 3001 characters".
    return f"must be less than {limit + 1} characters [json-pointer:{ptr}]"


def _check_text(
    obj: Any, ptr: str, *, max_len: int | None = None, plain_only: bool = False
) -> list[str]:
    """Validate a composition text object (``{"type": "plain_text", "text": ...}``)."""
    if not isinstance(obj, dict):
        return [f"must be an object [json-pointer:{ptr}]"]
    errors: list[str] = []
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if "type" not in obj:
        errors.append(f"missing required field: type [json-pointer:{ptr}]")
    elif obj["type"] not in allowed:
        errors.append(f"must be a valid enum value [json-pointer:{ptr}/type]")
    text = obj.get("text")
    if text is None:
        errors.append(f"missing required field: text [json-pointer:{ptr}]")
    elif not isinstance(text, str):
        errors.append(f"must be a string [json-pointer:{ptr}/text]")
    elif text == "":
        errors.append(f"must be more than 0 characters [json-pointer:{ptr}/text]")
    elif max_len is not None and len(text) > max_len:
        errors.append(_too_long(max_len, f"{ptr}/text"))
    return errors


def _check_str(obj: dict[str, Any], key: str, ptr: str, max_len: int) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"must be a string [json-pointer:{ptr}/{key}]"]
    return [_too_long(max_len, f"{ptr}/{key}")] if len(value) > max_len else []


def _check_items(
    items: Any, ptr: str, *, max_items: int, required: bool, name: str, parent: str
) -> list[str]:
    """Common list checks: present, a list, 1..max_items long."""
    if items is None:
        return [f"missing required field: {name} [json-pointer:{parent}]"] if required else []
    if not isinstance(items, list):
        return [f"must be an array [json-pointer:{ptr}]"]
    if not items:
        return [f"must provide at least 1 items [json-pointer:{ptr}]"]
    if len(items) > max_items:
        return [f"no more than {max_items} items allowed [json-pointer:{ptr}]"]
    return []


_OPTION_ELEMENTS = {
    "static_select",
    "multi_static_select",
    "radio_buttons",
    "checkboxes",
    "overflow",
}


def _check_element(el: Any, ptr: str) -> list[str]:
    """Validate an interactive element (button, select, input...)."""
    if not isinstance(el, dict):
        return [f"must be an object [json-pointer:{ptr}]"]
    if "type" not in el:
        return [f"missing required field: type [json-pointer:{ptr}]"]
    kind = el["type"]
    errors = _check_str(el, "action_id", ptr, 255)
    if "placeholder" in el:
        errors += _check_text(el["placeholder"], f"{ptr}/placeholder", max_len=150, plain_only=True)
    if kind == "button":
        if "text" not in el:
            errors.append(f"missing required field: text [json-pointer:{ptr}]")
        else:
            errors += _check_text(el["text"], f"{ptr}/text", max_len=75, plain_only=True)
        errors += _check_str(el, "value", ptr, 2000) + _check_str(el, "url", ptr, 3000)
    if kind in _OPTION_ELEMENTS:
        options = el.get("options")
        needs_options = "option_groups" not in el
        errors += _check_items(
            options,
            f"{ptr}/options",
            max_items=100,
            required=needs_options,
            name="options",
            parent=ptr,
        )
        for i, option in enumerate(options if isinstance(options, list) else []):
            optr = f"{ptr}/options/{i}"
            if not isinstance(option, dict):
                errors.append(f"must be an object [json-pointer:{optr}]")
                continue
            errors += _check_text(
                option.get("text"),
                f"{optr}/text",
                max_len=75,
                plain_only=kind not in ("radio_buttons", "checkboxes"),
            )
            errors += _check_str(option, "value", optr, 150)
    if kind == "plain_text_input":
        for key, low in (("max_length", 1), ("min_length", 0)):
            value = el.get(key)
            if value is not None and not (isinstance(value, int) and low <= value <= 3000):
                errors.append(f"must be between {low} and 3000 [json-pointer:{ptr}/{key}]")
    return errors


def _v_section(block: dict[str, Any], ptr: str) -> list[str]:
    errors: list[str] = []
    if "text" not in block and "fields" not in block:
        errors.append(f"must provide either text or fields [json-pointer:{ptr}]")
    if "text" in block:
        errors += _check_text(block["text"], f"{ptr}/text", max_len=3000)
    if "fields" in block:
        fields = block["fields"]
        errors += _check_items(
            fields, f"{ptr}/fields", max_items=10, required=False, name="fields", parent=ptr
        )
        for i, item in enumerate(fields if isinstance(fields, list) else []):
            errors += _check_text(item, f"{ptr}/fields/{i}")
    if "accessory" in block:
        errors += _check_element(block["accessory"], f"{ptr}/accessory")
    return errors


def _v_header(block: dict[str, Any], ptr: str) -> list[str]:
    if "text" not in block:
        return [f"missing required field: text [json-pointer:{ptr}]"]
    return _check_text(block["text"], f"{ptr}/text", max_len=150, plain_only=True)


def _v_actions(block: dict[str, Any], ptr: str) -> list[str]:
    elements = block.get("elements")
    errors = _check_items(
        elements, f"{ptr}/elements", max_items=25, required=True, name="elements", parent=ptr
    )
    for i, el in enumerate(elements if isinstance(elements, list) else []):
        errors += _check_element(el, f"{ptr}/elements/{i}")
    return errors


def _v_context(block: dict[str, Any], ptr: str) -> list[str]:
    elements = block.get("elements")
    errors = _check_items(
        elements, f"{ptr}/elements", max_items=10, required=True, name="elements", parent=ptr
    )
    for i, el in enumerate(elements if isinstance(elements, list) else []):
        if isinstance(el, dict) and el.get("type") in ("plain_text", "mrkdwn"):
            errors += _check_text(el, f"{ptr}/elements/{i}")
    return errors


def _v_input(block: dict[str, Any], ptr: str) -> list[str]:
    errors: list[str] = []
    if "label" not in block:
        errors.append(f"missing required field: label [json-pointer:{ptr}]")
    else:
        errors += _check_text(block["label"], f"{ptr}/label", max_len=2000, plain_only=True)
    if "element" not in block:
        errors.append(f"missing required field: element [json-pointer:{ptr}]")
    else:
        errors += _check_element(block["element"], f"{ptr}/element")
    if "hint" in block:
        errors += _check_text(block["hint"], f"{ptr}/hint", max_len=2000, plain_only=True)
    return errors


def _v_image(block: dict[str, Any], ptr: str) -> list[str]:
    errors: list[str] = []
    if "image_url" not in block and "slack_file" not in block:
        errors.append(f"missing required field: image_url [json-pointer:{ptr}]")
    if "alt_text" not in block:
        errors.append(f"missing required field: alt_text [json-pointer:{ptr}]")
    return (
        errors
        + _check_str(block, "alt_text", ptr, 2000)
        + _check_str(block, "image_url", ptr, 3000)
    )


def _v_markdown(block: dict[str, Any], ptr: str) -> list[str]:
    if "text" not in block:
        return [f"missing required field: text [json-pointer:{ptr}]"]
    return _check_str(block, "text", ptr, 12000)


def _v_any(block: dict[str, Any], ptr: str) -> list[str]:
    return []


_BLOCK_CHECKS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "section": _v_section,
    "header": _v_header,
    "actions": _v_actions,
    "context": _v_context,
    "input": _v_input,
    "image": _v_image,
    "markdown": _v_markdown,
    "divider": _v_any,
    "rich_text": _v_any,
    "file": _v_any,
    "video": _v_any,
    "table": _v_any,
    "call": _v_any,
    "context_actions": _v_any,
}


def validate_blocks(blocks: list[Any], ptr: str, *, max_blocks: int) -> list[str]:
    """Check a list of blocks; returns Slack-style messages (empty when valid)."""
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:{ptr}]")
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        bptr = f"{ptr}/{i}"
        if not isinstance(block, dict):
            errors.append(f"failed to match all allowed schemas [json-pointer:{bptr}]")
            continue
        if "type" not in block:
            errors.append(f"missing required field: type [json-pointer:{bptr}]")
            continue
        check = _BLOCK_CHECKS.get(block["type"])
        if check is None:
            errors.append(f"failed to match all allowed schemas [json-pointer:{bptr}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            errors += _check_str(block, "block_id", bptr, 255)
            if block_id in seen:
                errors.append(f"duplicate block_id [json-pointer:{bptr}/block_id]")
            seen.add(block_id)
        errors += check(block, bptr)
    return errors


def validate_view(view: dict[str, Any], *, allowed_types: tuple[str, ...]) -> list[str]:
    """Check a view payload like views.open/update/push/publish do."""
    errors: list[str] = []
    kind = view.get("type")
    if kind is None:
        errors.append("missing required field: type [json-pointer:/view]")
    elif kind not in allowed_types:
        errors.append("must be a valid enum value [json-pointer:/view/type]")
    if kind == "modal":
        if "title" not in view:
            errors.append("missing required field: title [json-pointer:/view]")
        for key in ("title", "submit", "close"):
            if view.get(key) is not None:
                errors += _check_text(view[key], f"/view/{key}", max_len=24, plain_only=True)
        has_input = any(
            isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
        )
        if has_input and view.get("submit") is None:
            errors.append("must provide submit when the view has input blocks [json-pointer:/view]")
    for key, limit in (("callback_id", 255), ("external_id", 255), ("private_metadata", 3000)):
        errors += _check_str(view, key, "/view", limit)
    blocks = view.get("blocks")
    if blocks is None:
        errors.append("missing required field: blocks [json-pointer:/view]")
    elif not isinstance(blocks, list):
        errors.append("must be an array [json-pointer:/view/blocks]")
    else:
        errors += validate_blocks(blocks, "/view/blocks", max_blocks=100)
    return errors


# --------------------------------------------------------------------------- users

_TZ_LABELS = {
    "GMT": "Greenwich Mean Time",
    "UTC": "Coordinated Universal Time",
    "BST": "British Summer Time",
    "WET": "Western European Time",
    "WEST": "Western European Summer Time",
    "CET": "Central European Time",
    "CEST": "Central European Summer Time",
    "EET": "Eastern European Time",
    "EEST": "Eastern European Summer Time",
    "MSK": "Moscow Time",
    "IST": "India Standard Time",
    "JST": "Japan Standard Time",
    "AEST": "Australian Eastern Standard Time",
    "AEDT": "Australian Eastern Daylight Time",
    "EST": "Eastern Standard Time",
    "EDT": "Eastern Daylight Time",
    "CST": "Central Standard Time",
    "CDT": "Central Daylight Time",
    "MST": "Mountain Standard Time",
    "MDT": "Mountain Daylight Time",
    "PST": "Pacific Standard Time",
    "PDT": "Pacific Daylight Time",
}


def _tz_fields(tz: str) -> dict[str, Any]:
    """``tz``, ``tz_label``, ``tz_offset`` (seconds east of UTC, as of now)."""
    now = datetime.now(ZoneInfo(tz))
    offset = now.utcoffset()
    abbreviation = now.tzname() or tz
    return {
        "tz": tz,
        "tz_label": _TZ_LABELS.get(abbreviation, abbreviation),
        "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
    }


def manifest_scopes(path: str | Path = MANIFEST) -> frozenset[str]:
    """The bot scopes an app manifest asks for (oauth_config.scopes.bot)."""
    manifest = yaml.safe_load(Path(path).read_text())
    return frozenset(((manifest.get("oauth_config") or {}).get("scopes") or {}).get("bot") or ())


# --------------------------------------------------------------------------- HTTP plumbing


class _RequestHandler(BaseHTTPRequestHandler):
    """Hands every request to the owning FakeSlack; never raises."""

    fake: ClassVar[FakeSlack]
    server_version = "FakeSlack/1.0"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        except (OSError, ValueError):
            self.close_connection = True
            return
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.fake._handle_http(split.path, split.query, headers, body, verb=self.command)
        self.close_connection = True
        if reply.drop:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (e.g. its timeout fired during an injected delay)


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 resets connections under a burst; real Slack does not.
    request_queue_size = 1024
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("FakeSlack connection error from %s", client_address, exc_info=True)


# --------------------------------------------------------------------------- the fake


class FakeSlack:
    """In-process fake of the Slack Web API (see module docstring)."""

    def __init__(
        self,
        *,
        bot_token: str,
        app_token: str = DEFAULT_APP_TOKEN,
        single_use_triggers: bool = True,
        scopes: Collection[str] | None = None,
        manifest: str | Path = MANIFEST,
    ) -> None:
        """``app_token``: the one app-level token ``apps.connections.open`` accepts.
        ``single_use_triggers``: a trigger_id works once (views.open/push), as in Slack.
        ``scopes``: the bot scopes granted; None: the bot scopes ``manifest`` asks for, read
        when the fake starts."""
        self.bot_token = bot_token
        self.granted: frozenset[str] = frozenset(scopes or ())
        self._manifest = None if scopes is not None else Path(manifest)
        self.token_revoked = False
        self.app_token = app_token
        self.single_use_triggers = single_use_triggers
        # What apps.connections.open answers as "url": a ws:// URL, or a callable returning
        # one per request (e.g. FakeSocketMode.issue_url). None: the method fails loudly.
        self.socket_url: str | Callable[[], str] | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, _Method] = {}
        self._calls: list[Call] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._limits: dict[str, _Bucket] = {}
        self._chaos: dict[str, tuple[float, random.Random, tuple[int, ...], int]] = {}
        self._after: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.rate_limited = 0  # calls refused by limit_rate (not by inject_faults)
        # set_latency: (seconds, the methods it applies to; None = every Web API method)
        self._latency: tuple[float, frozenset[str] | None] = (0.0, None)
        self._history_page_cap: int | None = None  # see history_page_cap
        self._server_errors: list[str] = []
        self._users: dict[str, _User] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._channels: dict[str, _Channel] = {}
        self._messages: dict[str, dict[str, dict[str, Any]]] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self._home_views: dict[str, dict[str, Any]] = {}
        self._home_view_ids: dict[str, str] = {}
        self._used_triggers: set[str] = set()
        self._uploads: dict[str, _Upload] = {}  # upload URL token -> ticket
        self._uploads_by_file: dict[str, _Upload] = {}  # file id -> ticket
        self._files: dict[str, dict[str, Any]] = {}  # completed files (see ``files``)
        self._response_urls: dict[str, int] = {}  # response_url path -> uses left
        self._last_ts_us = 0
        self._seq = itertools.count(1)
        self._add_bot_user()
        self._register_builtin_methods()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FakeSlack:
        """Start serving on 127.0.0.1 with an OS-chosen port (daemon thread)."""
        if self._server is not None:
            raise RuntimeError("FakeSlack already started")
        if self._manifest is not None:
            self.granted = manifest_scopes(self._manifest)
        self._stopping.clear()
        handler = type("FakeSlackHandler", (_RequestHandler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # fast stop()
            name=f"FakeSlack:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for ``WebClient(base_url=...)``, e.g. ``http://127.0.0.1:5555/api/``."""
        return f"http://127.0.0.1:{self.port}/api/"

    # ----------------------------------------------------------------- state set-up

    def add_user(
        self,
        user_id: str,
        *,
        tz: str | None = "UTC",
        name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
        real_name: str | None = None,
        display_name: str | None = None,
    ) -> None:
        """Add or replace a workspace member. ``tz=None``: user object without tz keys."""
        if tz is not None:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {tz!r}") from exc
        name = name or user_id.lower()
        with self._lock:
            self._users[user_id] = _User(
                id=user_id,
                name=name,
                real_name=real_name if real_name is not None else name,
                display_name=display_name if display_name is not None else name,
                tz=tz,
                email=email,
                is_bot=is_bot,
                deleted=deleted,
            )

    def set_usergroup(self, usergroup_id: str, user_ids: list[str]) -> None:
        """Set (or replace) the members of a user group."""
        with self._lock:
            self._usergroups[usergroup_id] = list(user_ids)

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        is_member: bool = True,
        is_private: bool = False,
    ) -> None:
        """Add a public (or private) channel; the bot is a member unless ``is_member=False``."""
        with self._lock:
            self._channels[channel_id] = _Channel(
                id=channel_id,
                name=name or channel_id.lower(),
                is_member=is_member,
                is_private=is_private,
            )
            self._messages.setdefault(channel_id, {})

    def add_message(
        self,
        channel_id: str,
        text: str,
        *,
        user: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> str:
        """Seed a message written by a person (e.g. to react to or reply under); returns ts."""
        with self._lock:
            if channel_id in self._channels:
                channel = channel_id
            else:
                try:
                    channel = self._resolve_channel(channel_id)
                except SlackError as exc:
                    raise ValueError(f"unknown channel {channel_id!r}") from exc
            ts = ts or self._next_ts()
            if ts in self._messages[channel]:
                raise ValueError(f"message {ts} already exists in {channel}")
            message: dict[str, Any] = {
                "type": "message",
                "user": user,
                "text": text,
                "ts": ts,
                "team": TEAM_ID,
                "blocks": copy.deepcopy(blocks or []),
            }
            self._store_message(channel, message, thread_ts)
            return ts

    def revoke_token(self) -> None:
        """From now on the bot token is answered ``token_revoked`` (the app was
        uninstalled, or the token revoked in the app's settings)."""
        with self._lock:
            self.token_revoked = True

    def dm_channel_id(self, user_id: str) -> str:
        """The stable IM channel id (``D...``) of the bot's DM with ``user_id``."""
        return "D" + hashlib.sha1(user_id.encode()).hexdigest()[:8].upper()

    def new_response_url(self) -> str:
        """A fresh slash-command ``response_url`` on this server (5 uses)."""
        n = next(self._seq)
        path = f"{RESPONSE_PATH}{TEAM_ID}/{n}/{hashlib.sha1(str(n).encode()).hexdigest()[:24]}"
        with self._lock:
            self._response_urls[path] = RESPONSE_URL_USES
        return f"http://127.0.0.1:{self.port}{path}"

    def new_trigger_id(self) -> str:
        """A fresh, realistic-looking trigger_id for views.open/push."""
        n = next(self._seq)
        return f"{n}.{int(time.time())}.{hashlib.sha1(str(n).encode()).hexdigest()[:24]}"

    # ----------------------------------------------------------------- inspection

    @property
    def calls(self) -> list[Call]:
        """Every call received, in order (a copy of the list)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, *, include_failed: bool = False) -> list[Call]:
        """Calls to ``method``; only ``ok: true`` ones unless ``include_failed``."""
        with self._lock:
            return [c for c in self._calls if c.method == method and (include_failed or c.ok)]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Block until ``count`` ok calls to ``method`` exist; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.calls_to(method)
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(
                        f"{c.method}->{'ok' if c.ok else (c.error or c.status)}"
                        for c in self._calls
                    )
                    raise AssertionError(
                        f"expected {count} ok call(s) to {method} within {timeout}s, "
                        f"got {len(found)}; calls: [{seen}]"
                    )
                self._changed.wait(remaining)

    def reset(self) -> None:
        """Forget recorded calls (state and pending faults are kept)."""
        with self._lock:
            self._calls.clear()

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of exceptions raised inside the fake (answered as HTTP 500)."""
        with self._lock:
            return list(self._server_errors)

    @property
    def messages(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Snapshot: channel id -> ts -> message, as posted/updated."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def views(self) -> dict[str, dict[str, Any]]:
        """Snapshot: view id -> view as last opened/updated/pushed/published."""
        with self._lock:
            return copy.deepcopy(self._views)

    @property
    def home_views(self) -> dict[str, dict[str, Any]]:
        """Snapshot: user id -> last published home view."""
        with self._lock:
            return copy.deepcopy(self._home_views)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Snapshot: file id -> file completed by files.completeUploadExternal.

        Keys: ``id``, ``name`` (the filename), ``title``, ``mimetype``, ``size``, ``content``
        (the exact bytes uploaded), ``channels`` (ids shared to, DMs included; empty when
        private), ``message_ts`` (channel -> ts of the share message), ``initial_comment``,
        ``thread_ts``, ``alt_txt``, ``snippet_type`` and ``file`` (the file object Slack
        answered). Uploads never completed are not here (see ``calls_to("upload")``).
        """
        with self._lock:
            return copy.deepcopy(self._files)

    # ----------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        drop: bool = False,
        delay: float | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail (faults are used in order).

        ``error="ratelimited"`` (or ``retry_after``) -> HTTP 429 + ``Retry-After``;
        ``status=5xx`` -> that status with a Slack-like JSON body; ``error`` alone -> HTTP 200
        ``ok: false``; ``drop`` -> close the connection unanswered; ``delay`` -> sleep first,
        then answer normally (or apply the other settings).
        """
        if error is None and status is None and retry_after is None and not drop and not delay:
            raise ValueError("fail_next needs error, status, retry_after, drop or delay")
        if times < 1:
            raise ValueError("times must be >= 1")
        if error in ("ratelimited", "rate_limited") or retry_after is not None or status == 429:
            status = status or 429
            error = error or "ratelimited"
            retry_after = 1 if retry_after is None else retry_after
        fault = _Fault(error=error, status=status, retry_after=retry_after, drop=drop, delay=delay)
        with self._lock:
            self._faults.setdefault(method, deque()).extend(copy.copy(fault) for _ in range(times))

    def limit_rate(self, method: str, *, per_second: float, burst: int = 1) -> None:
        """Enforce a rate limit on ``method`` as Slack does: a token bucket of ``burst`` refilled
        at ``per_second``; a call finding it empty gets HTTP 429 ``ratelimited`` with a
        Retry-After (whole seconds, at least 1). Only calls that are answered count."""
        with self._lock:
            self._limits[method] = _Bucket(per_second, burst, float(burst), time.monotonic())

    def inject_faults(
        self,
        method: str,
        *,
        fraction: float,
        seed: int = 0,
        statuses: tuple[int, ...] = (429, 500),
        retry_after: int = 1,
    ) -> None:
        """Answer a random ``fraction`` of calls to ``method`` with one of ``statuses``
        (429 carries Retry-After), reproducibly for a ``seed``; such calls do not count
        against a :meth:`limit_rate` limit (Slack did nothing with them)."""
        with self._lock:
            self._chaos[method] = (fraction, random.Random(seed), statuses, retry_after)

    def after_success(self, method: str, hook: Callable[[dict[str, Any]], None] | None) -> None:
        """Call ``hook(response body)`` after each successful ``method`` call, under the state
        lock and before the answer is written: a test can kill the caller at the moment Slack
        has done the work but the caller cannot know it."""
        with self._lock:
            if hook is None:
                self._after.pop(method, None)
            else:
                self._after[method] = hook

    def _chaos_or_limit(self, method: str) -> _Reply | None:
        with self._lock:
            chaos = self._chaos.get(method)
            if chaos is not None:
                fraction, rng, statuses, retry_after = chaos
                if rng.random() < fraction:
                    status = rng.choice(statuses)
                    if status == 429:
                        return _Reply(
                            429,
                            {"ok": False, "error": "ratelimited"},
                            {"Retry-After": str(retry_after)},
                        )
                    return _Reply(status, {"ok": False, "error": "fatal_error"})
            bucket = self._limits.get(method)
            if bucket is None:
                return None
            now = time.monotonic()
            bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.last) * bucket.rate)
            bucket.last = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            wait = (1 - bucket.tokens) / bucket.rate
            self.rate_limited += 1
            return _Reply(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(max(1, ceil(wait)))}
            )

    def set_latency(self, seconds: float, methods: Collection[str] | None = None) -> None:
        """Make Slack slow: every later Web API call (``methods=None``), or only calls to
        ``methods``, waits ``seconds`` before it is handled, i.e. before injected faults,
        :meth:`limit_rate`/:meth:`inject_faults` and the method itself act; so what the
        call changes happens, and its :class:`Call` is recorded, only after the wait.

        The wait holds no lock: concurrent calls overlap like requests to a slow Slack, and
        the test can inspect or change the fake meanwhile; :meth:`stop` cuts it short
        (the connection is then dropped). It adds to a ``fail_next(delay=...)``; a call that
        a ``fail_next(drop=True)`` drops gets no answer, so it does not wait.

        With ``methods=None`` the raw upload step and ``response_url`` posts are not
        delayed (files.slack.com and the response_url endpoint are not the Web API); name
        :data:`UPLOAD_METHOD` or :data:`RESPONSE_URL_METHOD` in ``methods`` to delay them.
        A lone string is taken as one method name. Each call replaces the previous setting;
        ``set_latency(0)`` (or :meth:`clear_faults`) turns it off.
        """
        if not seconds >= 0:  # also refuses NaN
            raise ValueError("seconds must be >= 0")
        names: frozenset[str] | None = None
        if methods is not None:
            names = frozenset([methods] if isinstance(methods, str) else methods)
        with self._lock:
            self._latency = (float(seconds), names) if seconds > 0 else (0.0, None)

    def _latency_for(self, method: str, *, web_api: bool) -> float:
        """Seconds a call to ``method`` waits under :meth:`set_latency` (lock held)."""
        seconds, names = self._latency
        if seconds <= 0:
            return 0.0
        if names is None:
            return seconds if web_api else 0.0
        return seconds if method in names else 0.0

    @property
    def history_page_cap(self) -> int | None:
        """At most this many messages a ``conversations.history`` page, whatever ``limit``
        asks for (Slack "may return fewer than the requested number", e.g. 15 for some
        apps); ``has_more``/``next_cursor`` then lead to the rest.
        None (the default): pages hold ``limit`` messages."""
        with self._lock:
            return self._history_page_cap

    @history_page_cap.setter
    def history_page_cap(self, cap: int | None) -> None:
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError("history_page_cap must be None or an int >= 1")
        with self._lock:
            self._history_page_cap = cap

    def clear_faults(self) -> None:
        """Drop all pending injected faults, random faults, rate limits and the
        :meth:`set_latency` latency."""
        with self._lock:
            self._faults.clear()
            self._chaos.clear()
            self._limits.clear()
            self._latency = (0.0, None)

    # ----------------------------------------------------------------- method table

    def register(
        self,
        method: str,
        handler: Handler,
        *,
        accepts_json: bool = True,
        token: str = "bot",
        scopes: tuple[str, ...] | None = None,
    ) -> None:
        """Add or replace a Web API method.

        ``handler(params) -> dict`` returns the response without ``ok`` and raises
        :class:`SlackError` for ``ok: false``; it runs under the state lock. Set
        ``accepts_json=False`` for methods Slack only reads from query/form parameters.
        ``token="app"``: the method needs the app-level token, in the Authorization header.
        ``scopes``: the bot scopes it takes; None: Slack's (bot.slack.scopes.METHOD_SCOPES),
        none for a method not listed there.
        """
        if token not in ("bot", "app"):
            raise ValueError('token must be "bot" or "app"')
        if scopes is None:
            scopes = slack_scopes.METHOD_SCOPES.get(method, ())
        self._methods[method] = _Method(
            handler=handler, accepts_json=accepts_json, token=token, scopes=scopes
        )

    def _register_builtin_methods(self) -> None:
        table: list[tuple[str, Handler, bool]] = [
            ("auth.test", self._auth_test, True),
            ("chat.postMessage", self._chat_post_message, True),
            ("chat.update", self._chat_update, True),
            ("chat.postEphemeral", self._chat_post_ephemeral, True),
            ("conversations.open", self._conversations_open, True),
            ("conversations.history", self._conversations_history, False),
            ("conversations.replies", self._conversations_replies, False),
            ("conversations.info", self._conversations_info, False),
            ("users.info", self._users_info, False),
            ("users.list", self._users_list, False),
            ("users.lookupByEmail", self._users_lookup_by_email, False),
            ("usergroups.users.list", self._usergroups_users_list, False),
            ("views.open", self._views_open, True),
            ("views.update", self._views_update, True),
            ("views.push", self._views_push, True),
            ("views.publish", self._views_publish, True),
            ("reactions.add", self._reactions_add, True),
            ("chat.getPermalink", self._chat_get_permalink, False),
            ("files.getUploadURLExternal", self._files_get_upload_url_external, True),
            ("files.completeUploadExternal", self._files_complete_upload_external, True),
        ]
        for method, handler, accepts_json in table:
            self.register(method, handler, accepts_json=accepts_json)
        self.register("apps.connections.open", self._apps_connections_open, token="app")

    # ----------------------------------------------------------------- request pipeline

    def _handle_http(
        self, path: str, query: str, headers: dict[str, str], body: bytes, *, verb: str = "POST"
    ) -> _Reply:
        """Answer one HTTP request; records it and never raises."""
        is_upload = path.startswith(UPLOAD_PATH)
        is_response = path.startswith(RESPONSE_PATH)
        if is_upload:
            method = UPLOAD_METHOD
        elif is_response:
            method = RESPONSE_URL_METHOD
        elif path.startswith("/api/"):
            method = unquote(path[len("/api/") :]).strip("/")
        else:
            method = path
        parsed = _ParsedRequest(query={}, form={}, json={})
        upload_params: dict[str, Any] = {"path": path, "size": len(body)}
        try:
            if not is_upload:  # upload bodies are raw bytes, whatever their Content-Type says
                parsed = _parse_request(query, headers, body)
            with self._lock:
                queue = self._faults.get(method)
                fault = queue.popleft() if queue else None
                latency = self._latency_for(method, web_api=path.startswith("/api/"))
            reply = None
            if latency and not (fault and fault.drop):
                reply = self._wait(latency)  # outside the lock (see set_latency)
            if reply is None and fault:
                reply = self._apply_fault(fault)
            if reply is None:
                reply = self._chaos_or_limit(method)
            if reply is None:
                with self._lock:
                    if is_upload:
                        reply = self._receive_upload(verb, path, headers, body, upload_params)
                    elif is_response:
                        reply = self._receive_response(verb, path, parsed)
                    else:
                        reply = self._dispatch(method, path, parsed, headers)
                    hook = self._after.get(method)
                    if hook is not None and reply.status == 200 and (reply.body or {}).get("ok"):
                        hook(reply.body)  # before the answer is written (see after_success)
        except Exception:
            trace = traceback.format_exc()
            log.error("FakeSlack: exception while handling %s\n%s", method, trace)
            with self._lock:
                self._server_errors.append(trace)
            reply = _Reply(500, {"ok": False, "error": "fatal_error"})
        if is_upload:
            params = upload_params
        else:
            params = _decode_json_fields({**parsed.query, **parsed.form, **parsed.json})
        call = Call(
            method=method,
            params=params,
            headers=dict(headers),
            response=None if reply.drop else copy.deepcopy(reply.body),
            status=0 if reply.drop else reply.status,
        )
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()
        return reply

    def _wait(self, seconds: float) -> _Reply | None:
        """Sleep (lock not held); a dropped connection when the fake stops meanwhile."""
        self._stopping.wait(seconds)
        return _Reply(drop=True) if self._stopping.is_set() else None

    def _apply_fault(self, fault: _Fault) -> _Reply | None:
        """Turn an injected fault into a reply; None means 'answer normally'."""
        if fault.delay:
            stopped = self._wait(fault.delay)
            if stopped is not None:
                return stopped
        if fault.drop:
            return _Reply(drop=True)
        if fault.status is None and fault.error is None:
            return None
        status = fault.status or 200
        default_error = {429: "ratelimited", 503: "service_unavailable"}.get(status, "fatal_error")
        body = {"ok": False, "error": fault.error or default_error}
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return _Reply(status, body, headers)

    def _dispatch(
        self, method: str, path: str, parsed: _ParsedRequest, headers: dict[str, str]
    ) -> _Reply:
        if not path.startswith("/api/"):
            return _Reply(404, {"ok": False, "error": "not_found"})
        spec = self._methods.get(method)
        if spec is None:
            return _Reply(200, {"ok": False, "error": "unknown_method", "req_method": method})
        if parsed.error:
            return _Reply(200, {"ok": False, "error": parsed.error})
        auth_error = (
            self._check_app_token(headers, parsed)
            if spec.token == "app"
            else self._check_bot_token(headers, parsed)
        )
        if auth_error:
            return _Reply(200, {"ok": False, "error": auth_error})
        params = {**parsed.query, **parsed.form}
        if spec.accepts_json:
            params.update(parsed.json)
        params.pop("token", None)
        params = _decode_json_fields(params)
        headers_out: dict[str, str] = {}
        if spec.token == "bot":
            headers_out = {
                "x-oauth-scopes": ",".join(sorted(self.granted)),
                "x-accepted-oauth-scopes": ",".join(spec.scopes),
            }
            needed = self._missing_scope(method, spec.scopes, params)
            if needed is not None:
                body = {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": needed,
                    "provided": ",".join(sorted(self.granted)),
                }
                return _Reply(200, body, headers_out)
        try:
            body = {"ok": True, **spec.handler(params)}
        except SlackError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        if parsed.json_without_charset:
            body["warning"] = "missing_charset"
            meta = body.setdefault("response_metadata", {})
            meta.setdefault("warnings", []).append("missing_charset")
        return _Reply(200, body, headers_out)

    def _missing_scope(self, method: str, accepted: tuple[str, ...], params: Params) -> str | None:
        """The scope a bot-token call lacks (Slack's ``needed``), None when it may go on."""
        if not accepted or len(accepted) == 1:
            return accepted[0] if accepted and accepted[0] not in self.granted else None
        kind = self._conversation_kind(method, params)
        if kind is None:  # an unknown conversation: any one scope lets Slack say so
            return None if self.granted & set(accepted) else accepted[0]
        needed = accepted[slack_scopes.CONVERSATION_KINDS.index(kind)]
        return None if needed in self.granted else needed

    def _conversation_kind(self, method: str, params: Params) -> str | None:
        """public/private/im/mpim: the conversation a conversations.* call is about."""
        users = params.get("users")
        if method == "conversations.open" and users:
            count = len(users) if isinstance(users, list) else len(str(users).split(","))
            return slack_scopes.IM if count == 1 else slack_scopes.MPIM
        channel = self._channels.get(_str_param(params, "channel") or "")
        if channel is None:
            return None
        if channel.is_im:
            return slack_scopes.IM
        return slack_scopes.PRIVATE if channel.is_private else slack_scopes.PUBLIC

    @staticmethod
    def _bearer(headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return auth[7:].strip()
        return None

    @classmethod
    def _token(cls, headers: dict[str, str], parsed: _ParsedRequest) -> str | None:
        """Bearer header, else a ``token`` query/form field (never a JSON body field)."""
        bearer = cls._bearer(headers)
        if bearer is not None:
            return bearer
        token = parsed.form.get("token") or parsed.query.get("token")
        return str(token) if token else None

    def _check_bot_token(self, headers: dict[str, str], parsed: _ParsedRequest) -> str | None:
        """The error code for a bot-token method's credentials, None when they are good."""
        token = self._token(headers, parsed)
        if token is None:
            return "not_authed"
        if token != self.bot_token:
            return "invalid_auth"
        return "token_revoked" if self.token_revoked else None

    def _check_app_token(self, headers: dict[str, str], parsed: _ParsedRequest) -> str | None:
        """Same for an app-level-token method (apps.connections.open). Slack reads that token
        from the Authorization header only (a form ``token=xapp-...`` gets invalid_auth), and
        refuses a valid token of the wrong type with not_allowed_token_type."""
        bearer = self._bearer(headers)
        if bearer is None:
            has_field = parsed.form.get("token") or parsed.query.get("token")
            return "invalid_auth" if has_field else "not_authed"
        if bearer == self.app_token:
            return None
        return "not_allowed_token_type" if bearer == self.bot_token else "invalid_auth"

    def _receive_upload(
        self, verb: str, path: str, headers: dict[str, str], body: bytes, params: dict[str, Any]
    ) -> _Reply:
        """``POST <upload_url>`` (lock held): keep the bytes of one upload ticket.

        Answers like files.slack.com: ``200`` ``OK - <bytes received>`` (text/plain); a URL
        that is unknown or was used already 404, another verb 405. No token is needed.
        ``params`` (the recorded Call's) gains upload_id, file_id, filename, size, content.
        """
        token = path[len(UPLOAD_PATH) :].strip("/")
        params["upload_id"] = token
        if verb != "POST":
            return _text_reply(405, "Method Not Allowed", error="method_not_allowed")
        upload = self._uploads.get(token)
        if upload is None or upload.content is not None:
            return _text_reply(404, "Not Found", error="not_found")
        content = _upload_content(headers, body)
        upload.content = content
        params.update(
            {
                "file_id": upload.file_id,
                "filename": upload.filename,
                "size": len(content),
                "content": content,
            }
        )
        return _text_reply(200, f"OK - {len(content)}")

    def _receive_response(self, verb: str, path: str, parsed: _ParsedRequest) -> _Reply:
        """``POST <response_url>`` (lock held): a JSON message with text or blocks."""
        if verb != "POST":
            return _text_reply(405, "Method Not Allowed", error="method_not_allowed")
        left = self._response_urls.get(path, 0)
        if left <= 0:
            return _text_reply(404, "expired_url", error="expired_url")
        if parsed.error or not (parsed.json.get("text") or parsed.json.get("blocks")):
            return _text_reply(400, "no_text", error="no_text")
        self._response_urls[path] = left - 1
        return _text_reply(200, "ok")

    # ----------------------------------------------------------------- helpers (lock held)

    def _add_bot_user(self) -> None:
        self._users[BOT_USER_ID] = _User(
            id=BOT_USER_ID,
            name=BOT_USER_NAME,
            real_name="Closeloop",
            display_name="",
            tz="America/Los_Angeles",
            email=None,
            is_bot=True,
            deleted=False,
            bot_id=BOT_ID,
        )

    def _next_ts(self) -> str:
        """Unique, increasing message ts ("1700000000.000100" style) near the current time."""
        micros = max(time.time_ns() // 1000, self._last_ts_us + 1)
        self._last_ts_us = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _short_id(self, length: int = 5) -> str:
        """A fresh opaque id (generated block_id/action_id, view hash suffix)."""
        return hashlib.sha1(str(next(self._seq)).encode()).hexdigest()[:length]

    def _open_dm(self, user_id: str) -> _Channel:
        dm_id = self.dm_channel_id(user_id)
        if dm_id not in self._channels:
            self._channels[dm_id] = _Channel(id=dm_id, name=dm_id, is_im=True, user=user_id)
            self._messages.setdefault(dm_id, {})
        return self._channels[dm_id]

    def _resolve_channel(self, value: Any) -> str:
        """Channel id / #name / user id (-> DM) to a channel id the bot can post in."""
        if not isinstance(value, str) or not value:
            raise SlackError("channel_not_found")
        if value in self._channels:
            channel = self._channels[value]
            if not channel.is_member:
                raise SlackError("not_in_channel")
            return channel.id
        user = self._users.get(value)
        if user is not None and not user.deleted and user.id != BOT_USER_ID:
            return self._open_dm(user.id).id
        for user_id in self._users:  # a D... id derived from a known user
            if value == self.dm_channel_id(user_id) and not self._users[user_id].deleted:
                return self._open_dm(user_id).id
        name = value.removeprefix("#")
        for channel in self._channels.values():
            if channel.name == name and not channel.is_im:
                if not channel.is_member:
                    raise SlackError("not_in_channel")
                return channel.id
        raise SlackError("channel_not_found")

    def _assign_ids(self, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copy of blocks with generated block_id/action_id where missing, as Slack does."""
        out = copy.deepcopy(blocks)
        for block in out:
            block.setdefault("block_id", self._short_id())
            elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
            elements += [
                block[k] for k in ("element", "accessory") if isinstance(block.get(k), dict)
            ]
            for element in elements:
                if isinstance(element, dict) and element.get("type") not in ("image", None):
                    element.setdefault("action_id", self._short_id())
        return out

    def _message_content(
        self, params: Params
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        """Validated (text, blocks, attachments) of a message; None where not given."""
        text = params.get("text")
        text = None if text is None else str(text)
        blocks = params.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise SlackError("invalid_blocks_format")
            errors = validate_blocks(blocks, "/blocks", max_blocks=50)
            if errors:
                raise SlackError(
                    "invalid_blocks",
                    errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )
        attachments = params.get("attachments")
        if attachments is not None:
            if not isinstance(attachments, list) or not all(
                isinstance(a, dict) for a in attachments
            ):
                raise SlackError("invalid_attachments")
            if len(attachments) > 100:
                raise SlackError("too_many_attachments")
        return text, blocks, attachments

    def _store_message(self, channel: str, message: dict[str, Any], thread_ts: str | None) -> None:
        """Store a message; a reply to a reply joins the parent's thread, as in Slack."""
        messages = self._messages.setdefault(channel, {})
        if thread_ts:
            parent = messages.get(thread_ts)
            if parent is not None:
                thread_ts = parent.get("thread_ts", thread_ts)
                root = messages.get(thread_ts, parent)
                root["thread_ts"] = thread_ts
                root["reply_count"] = root.get("reply_count", 0) + 1
                root["latest_reply"] = message["ts"]
            message["thread_ts"] = thread_ts
        messages[message["ts"]] = message

    def _user_object(self, user: _User, *, include_locale: bool = False) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.display_name,
            "display_name_normalized": user.display_name,
            "team": TEAM_ID,
        }
        if user.email:
            profile["email"] = user.email
        if user.bot_id:
            profile["bot_id"] = user.bot_id
        obj: dict[str, Any] = {
            "id": user.id,
            "team_id": TEAM_ID,
            "name": user.name,
            "deleted": user.deleted,
            "color": "9f69e7",
            "real_name": user.real_name,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "updated": 1700000000,
        }
        if user.tz is not None:
            obj.update(_tz_fields(user.tz))
        if include_locale:
            obj["locale"] = "en-US"
        return obj

    def _parse_view_param(self, params: Params, allowed_types: tuple[str, ...]) -> dict[str, Any]:
        view = params.get("view")
        if view is None:
            raise _invalid_arguments("[ERROR] missing required field: view")
        if not isinstance(view, dict):
            raise _invalid_arguments("[ERROR] must be an object [json-pointer:/view]")
        if len(json.dumps(view)) > 250_000:
            raise SlackError("view_too_large")
        errors = validate_view(view, allowed_types=allowed_types)
        if errors:
            raise _invalid_arguments(*(f"[ERROR] {e}" for e in errors))
        return view

    def _check_trigger(self, params: Params) -> str:
        trigger_id = _str_param(params, "trigger_id")
        if trigger_id is None or not trigger_id.strip():
            raise _invalid_arguments("invalid `trigger_id`")
        if self.single_use_triggers and trigger_id in self._used_triggers:
            raise SlackError("exchanged_trigger_id")
        return trigger_id

    def _check_external_id(self, view: dict[str, Any], own_id: str | None) -> None:
        external_id = view.get("external_id")
        if not external_id:
            return
        for vid, other in self._views.items():
            if vid != own_id and other.get("external_id") == external_id:
                raise SlackError("duplicate_external_id")

    def _store_view(
        self,
        view: dict[str, Any],
        *,
        existing: dict[str, Any] | None = None,
        view_id: str | None = None,
        previous_view_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a validated view the way Slack answers it (id, hash, state...)."""
        view_id = view_id or (existing["id"] if existing else f"V{next(self._seq):08d}")
        stored: dict[str, Any] = {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": view["type"],
            "blocks": self._assign_ids(view.get("blocks") or []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{self._short_id(8)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": existing["previous_view_id"] if existing else previous_view_id,
            "root_view_id": existing["root_view_id"] if existing else view_id,
            "app_id": APP_ID,
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }
        if "title" in view:
            stored["title"] = view["title"]
        self._views[view_id] = stored
        return copy.deepcopy(stored)

    # ----------------------------------------------------------------- methods

    def _auth_test(self, params: Params) -> dict[str, Any]:
        """auth.test: who the bot token belongs to."""
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": TEAM_NAME,
            "user": BOT_USER_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, params: Params) -> dict[str, Any]:
        """apps.connections.open: a Socket Mode WebSocket URL (see ``socket_url``)."""
        target = self.socket_url
        if target is None:
            raise RuntimeError(
                "FakeSlack.socket_url is not set: wire a Socket Mode server first, e.g. "
                "fake_slack.socket_url = fake_socket_mode.issue_url"
            )
        return {"url": target() if callable(target) else target}

    def _chat_post_message(self, params: Params) -> dict[str, Any]:
        """chat.postMessage: post to a channel, DM (user id / D id) or thread."""
        channel = self._resolve_channel(params.get("channel"))
        text, blocks, attachments = self._message_content(params)
        if not text and not blocks and not attachments:
            raise SlackError("no_text")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": text or "",
            "ts": ts,
            "blocks": self._assign_ids(blocks or []),
        }
        if attachments:
            message["attachments"] = copy.deepcopy(attachments)
        if isinstance(params.get("metadata"), dict):
            message["metadata"] = copy.deepcopy(params["metadata"])
        thread_ts = _str_param(params, "thread_ts")
        if thread_ts and _truthy(params.get("reply_broadcast")):
            message["subtype"] = "thread_broadcast"
        self._store_message(channel, message, thread_ts)
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _conversations_history(self, params: Params) -> dict[str, Any]:
        """conversations.history: top-level messages, newest first, between oldest and latest
        (exclusive unless ``inclusive``); metadata only with ``include_all_metadata``.

        Cursor-paginated as Slack does: at most ``limit`` messages a page (default 100,
        maximum 999), fewer when :attr:`history_page_cap` is set (Slack "may return fewer than
        asked"); ``has_more`` and ``response_metadata.next_cursor`` (base64 of
        ``next_ts:<ts of the next, older message in microseconds>``) while more follow, no
        ``response_metadata`` on the last page. A ``cursor`` resumes at the newest message at
        or before its ts, so pass the same ``oldest``/``latest``/``inclusive`` on every page;
        one that is not such a cursor gets ``invalid_cursor``."""
        channel_id = _str_param(params, "channel")
        if channel_id is None or channel_id not in self._channels:
            raise SlackError("channel_not_found")
        if not self._channels[channel_id].is_member:
            raise SlackError("not_in_channel")
        try:
            oldest = float(_str_param(params, "oldest") or 0)
            latest = float(_str_param(params, "latest") or 9e12)
            limit = int(_str_param(params, "limit") or 100)
        except ValueError:
            raise SlackError("invalid_arguments") from None
        inclusive = _truthy(params.get("inclusive"))
        found = []
        for ts, message in self._messages.get(channel_id, {}).items():
            if message.get("thread_ts") not in (None, ts):
                continue  # replies live in conversations.replies
            value = float(ts)
            if (oldest <= value <= latest) if inclusive else (oldest < value < latest):
                found.append(message)
        found.sort(key=lambda m: float(m["ts"]), reverse=True)
        size = max(1, min(limit, 999))
        if self._history_page_cap is not None:
            size = min(size, self._history_page_cap)
        start = 0
        cursor = _str_param(params, "cursor")
        if cursor is not None:
            stamps = [m["ts"] for m in found]
            start = self._cursor_position(cursor, stamps, newest_first=True)
        with_metadata = _truthy(params.get("include_all_metadata"))
        shown = []
        for message in found[start : start + size]:
            copied = copy.deepcopy(message)
            if not with_metadata:
                copied.pop("metadata", None)
            shown.append(copied)
        has_more = start + size < len(found)
        answer: dict[str, Any] = {"messages": shown, "has_more": has_more, "pin_count": 0}
        if has_more:
            answer["response_metadata"] = {"next_cursor": _cursor_for(found[start + size])}
        return answer

    def _conversations_replies(self, params: Params) -> dict[str, Any]:
        """conversations.replies: a thread, oldest first. The first page starts with the
        parent message; ``ts`` may name the parent or any reply (a message without replies
        comes back alone). Replies are kept between ``oldest`` and ``latest`` (exclusive
        unless ``inclusive``); metadata only with ``include_all_metadata``. Cursor-paginated:
        at most ``limit`` messages a page (default and maximum 1000), ``has_more`` and
        ``response_metadata.next_cursor`` while more follow."""
        channel_id = _str_param(params, "channel")
        if channel_id is None or channel_id not in self._channels:
            raise SlackError("channel_not_found")
        if not self._channels[channel_id].is_member:
            raise SlackError("not_in_channel")
        messages = self._messages.get(channel_id, {})
        ts = _str_param(params, "ts")
        if ts is None or ts not in messages:
            raise SlackError("thread_not_found")
        try:
            oldest = float(_str_param(params, "oldest") or 0)
            latest = float(_str_param(params, "latest") or 9e12)
            limit = int(_str_param(params, "limit") or 1000)
        except ValueError:
            raise SlackError("invalid_arguments") from None
        limit = max(1, min(limit, 1000))
        inclusive = _truthy(params.get("inclusive"))
        root_ts = messages[ts].get("thread_ts") or ts
        thread = [messages[root_ts]] if root_ts in messages else []
        replies = []
        for reply_ts, message in messages.items():
            if reply_ts == root_ts or message.get("thread_ts") != root_ts:
                continue
            value = float(reply_ts)
            if (oldest <= value <= latest) if inclusive else (oldest < value < latest):
                replies.append(message)
        thread += sorted(replies, key=lambda m: float(m["ts"]))
        start = 0
        cursor = _str_param(params, "cursor")
        if cursor is not None:
            start = self._cursor_position(cursor, [m["ts"] for m in thread])
        page = thread[start : start + limit]
        with_metadata = _truthy(params.get("include_all_metadata"))
        shown = []
        for message in page:
            copied = copy.deepcopy(message)
            if not with_metadata:
                copied.pop("metadata", None)
            shown.append(copied)
        answer: dict[str, Any] = {"messages": shown, "has_more": start + limit < len(thread)}
        if answer["has_more"]:
            answer["response_metadata"] = {"next_cursor": _cursor_for(thread[start + limit])}
        return answer

    @staticmethod
    def _cursor_position(cursor: str, stamps: list[str], *, newest_first: bool = False) -> int:
        """Where a ``next_cursor`` of :func:`_cursor_for` resumes in ``stamps`` (oldest first,
        or newest first with ``newest_first``): at the first message at or past its ts in
        that order, so a message deleted meanwhile does not break the walk."""
        wanted = _cursor_value(cursor, "next_ts:")
        if not wanted.isdigit():
            raise SlackError("invalid_cursor")
        for position, ts in enumerate(stamps):
            micros = _ts_micros(ts)
            if (micros <= int(wanted)) if newest_first else (micros >= int(wanted)):
                return position
        return len(stamps)

    def _chat_update(self, params: Params) -> dict[str, Any]:
        """chat.update: edit a bot message; omitted blocks/attachments are kept."""
        channel_id = _str_param(params, "channel")
        if channel_id is None or channel_id not in self._channels:
            raise SlackError("channel_not_found")
        ts = _str_param(params, "ts")
        message = self._messages.get(channel_id, {}).get(ts or "")
        if message is None:
            raise SlackError("message_not_found")
        if message.get("bot_id") != BOT_ID:
            raise SlackError("cant_update_message")
        text, blocks, attachments = self._message_content(params)
        if not text and not blocks and not attachments:
            raise SlackError("no_text")
        message["text"] = text or ""
        if blocks is not None:
            message["blocks"] = self._assign_ids(blocks)
        if attachments is not None:
            message["attachments"] = copy.deepcopy(attachments)
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {
            "channel": channel_id,
            "ts": message["ts"],
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    def _chat_post_ephemeral(self, params: Params) -> dict[str, Any]:
        """chat.postEphemeral: visible to one user; nothing is stored."""
        self._resolve_channel(params.get("channel"))
        user = self._users.get(_str_param(params, "user") or "")
        if user is None or user.deleted:
            raise SlackError("user_not_in_channel")
        text, blocks, attachments = self._message_content(params)
        if not text and not blocks and not attachments:
            raise SlackError("no_text")
        return {"message_ts": self._next_ts()}

    def _conversations_open(self, params: Params) -> dict[str, Any]:
        """conversations.open: the bot's IM with one user (stable D... id)."""
        users = params.get("users")
        if isinstance(users, list):
            users = ",".join(str(u) for u in users)
        channel_id = _str_param(params, "channel")
        if not users:
            if channel_id is None:
                raise SlackError("users_list_not_supplied")
            existing = self._channels.get(channel_id)
            if existing is None or not existing.is_im:
                raise SlackError("channel_not_found")
            return {"channel": {"id": existing.id}, "no_op": True, "already_open": True}
        ids = [u.strip() for u in str(users).split(",") if u.strip()]
        if len(ids) != 1:
            raise SlackError("not_enough_users" if not ids else "too_many_users")
        user = self._users.get(ids[0])
        if user is None:
            raise SlackError("user_not_found")
        if user.deleted:
            raise SlackError("user_disabled")
        already_open = self.dm_channel_id(user.id) in self._channels
        channel = self._open_dm(user.id)
        body: dict[str, Any] = {"channel": {"id": channel.id}}
        if _truthy(params.get("return_im")):
            body["channel"].update(
                {
                    "created": 1700000000,
                    "is_im": True,
                    "is_org_shared": False,
                    "user": user.id,
                    "is_user_deleted": False,
                    "priority": 0,
                }
            )
        if already_open:
            body.update({"no_op": True, "already_open": True})
        return body

    def _conversations_info(self, params: Params) -> dict[str, Any]:
        """conversations.info: a channel the bot can see, with ``is_member``. A private
        channel the bot is not in is ``channel_not_found``, as in Slack."""
        channel = self._channels.get(_str_param(params, "channel") or "")
        if channel is None or (channel.is_private and not channel.is_member):
            raise SlackError("channel_not_found")
        if channel.is_im:
            return {"channel": {"id": channel.id, "is_im": True, "user": channel.user}}
        return {
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_channel": not channel.is_private,
                "is_group": False,
                "is_im": False,
                "is_mpim": False,
                "is_private": channel.is_private,
                "is_archived": False,
                "is_general": False,
                "is_member": channel.is_member,
                "created": 1700000000,
                "creator": "UADMIN",
            }
        }

    def _users_info(self, params: Params) -> dict[str, Any]:
        """users.info: one user object."""
        user = self._users.get(_str_param(params, "user") or "")
        if user is None:
            raise SlackError("user_not_found")
        include_locale = _truthy(params.get("include_locale"))
        return {"user": self._user_object(user, include_locale=include_locale)}

    def _users_list(self, params: Params) -> dict[str, Any]:
        """users.list: every member of the workspace (deleted people and bots included),
        ordered by id. Cursor-paginated: at most ``limit`` a page (no limit: all at once),
        ``response_metadata.next_cursor`` naming where the next page starts, "" on the last
        page (Slack's cursors are base64 of ``user:<id>``)."""
        try:
            limit = int(_str_param(params, "limit") or 0)
        except ValueError:
            raise SlackError("invalid_limit") from None
        people = sorted(self._users.values(), key=lambda user: user.id)
        start = 0
        cursor = _str_param(params, "cursor")
        if cursor:
            resume = _cursor_value(cursor, "user:")
            start = next((i for i, u in enumerate(people) if u.id >= resume), len(people))
        end = len(people) if limit <= 0 else start + limit
        include_locale = _truthy(params.get("include_locale"))
        members = [self._user_object(u, include_locale=include_locale) for u in people[start:end]]
        next_cursor = (
            base64.b64encode(f"user:{people[end].id}".encode()).decode()
            if end < len(people)
            else ""
        )
        return {
            "members": members,
            "cache_ts": int(time.time()),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _users_lookup_by_email(self, params: Params) -> dict[str, Any]:
        """users.lookupByEmail: case-insensitive email match."""
        email = (_str_param(params, "email") or "").strip().lower()
        for user in self._users.values():
            if email and user.email and user.email.lower() == email:
                return {"user": self._user_object(user)}
        raise SlackError("users_not_found")

    def _usergroups_users_list(self, params: Params) -> dict[str, Any]:
        """usergroups.users.list: member ids of a user group."""
        group = self._usergroups.get(_str_param(params, "usergroup") or "")
        if group is None:
            raise SlackError("no_such_subteam")
        return {"users": list(group)}

    def _views_open(self, params: Params) -> dict[str, Any]:
        """views.open: open a modal with a single-use trigger_id."""
        trigger_id = self._check_trigger(params)
        view = self._parse_view_param(params, ("modal",))
        self._check_external_id(view, None)
        self._used_triggers.add(trigger_id)
        return {"view": self._store_view(view)}

    def _views_push(self, params: Params) -> dict[str, Any]:
        """views.push: push a modal onto the stack (stack depth is not tracked)."""
        trigger_id = self._check_trigger(params)
        view = self._parse_view_param(params, ("modal",))
        self._check_external_id(view, None)
        self._used_triggers.add(trigger_id)
        return {"view": self._store_view(view)}

    def _views_update(self, params: Params) -> dict[str, Any]:
        """views.update: replace a view found by view_id or external_id."""
        view_id = _str_param(params, "view_id")
        external_id = _str_param(params, "external_id")
        if view_id is None and external_id is None:
            raise _invalid_arguments("[ERROR] missing required field: view_id or external_id")
        if view_id is not None:
            existing = self._views.get(view_id)
        else:
            existing = next(
                (v for v in self._views.values() if v.get("external_id") == external_id), None
            )
        if existing is None:
            raise SlackError("not_found")
        view = self._parse_view_param(params, ("modal", "home"))
        view_hash = _str_param(params, "hash")
        if view_hash is not None and view_hash != existing["hash"]:
            raise SlackError("hash_conflict")
        self._check_external_id(view, existing["id"])
        stored = self._store_view(view, existing=existing)
        for user_id, home in self._home_views.items():
            if home["id"] == stored["id"]:
                self._home_views[user_id] = copy.deepcopy(stored)
        return {"view": stored}

    def _views_publish(self, params: Params) -> dict[str, Any]:
        """views.publish: set a user's App Home (type "home")."""
        user_id = _str_param(params, "user_id")
        user = self._users.get(user_id or "")
        if user is None or user.deleted:
            raise _invalid_arguments("invalid `user_id`")
        view = self._parse_view_param(params, ("home",))
        current = self._home_views.get(user.id)
        view_hash = _str_param(params, "hash")
        if view_hash is not None and current is not None and view_hash != current["hash"]:
            raise SlackError("hash_conflict")
        view_id = self._home_view_ids.setdefault(user.id, f"V{next(self._seq):08d}")
        existing = self._views.get(view_id)
        stored = self._store_view(view, existing=existing, view_id=view_id)
        self._home_views[user.id] = copy.deepcopy(stored)
        return {"view": stored}

    def _reactions_add(self, params: Params) -> dict[str, Any]:
        """reactions.add: the bot reacts to a message."""
        timestamp = _str_param(params, "timestamp")
        channel_id = _str_param(params, "channel")
        if timestamp is None or channel_id is None:
            raise SlackError("no_item_specified")
        if not _TS_RE.match(timestamp):
            raise SlackError("bad_timestamp")
        if channel_id not in self._channels:
            raise SlackError("channel_not_found")
        name = (_str_param(params, "name") or "").strip(":")
        if not name:
            raise SlackError("invalid_name")
        message = self._messages.get(channel_id, {}).get(timestamp)
        if message is None:
            raise SlackError("message_not_found")
        reactions: list[dict[str, Any]] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if BOT_USER_ID in reaction["users"]:
            raise SlackError("already_reacted")
        reaction["users"].append(BOT_USER_ID)
        reaction["count"] += 1
        return {}

    def _chat_get_permalink(self, params: Params) -> dict[str, Any]:
        """chat.getPermalink: ``<PERMALINK_BASE>/archives/<channel>/p<ts without dot>``; a
        thread reply's link carries ``?thread_ts=<parent>&cid=<channel>`` as Slack's does."""
        channel_id = _str_param(params, "channel")
        if channel_id is None or channel_id not in self._channels:
            raise SlackError("channel_not_found")
        ts = _str_param(params, "message_ts") or ""
        message = self._messages.get(channel_id, {}).get(ts)
        if message is None:
            raise SlackError("message_not_found")
        permalink = f"{PERMALINK_BASE}/archives/{channel_id}/p{ts.replace('.', '')}"
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != ts:
            permalink += f"?thread_ts={thread_ts}&cid={channel_id}"
        return {"channel": channel_id, "permalink": permalink}

    def _files_get_upload_url_external(self, params: Params) -> dict[str, Any]:
        """files.getUploadURLExternal: a one-shot upload URL on this server and a file id."""
        filename = _str_param(params, "filename")
        raw_length = params.get("length")
        missing = [
            f"[ERROR] missing required field: {name}"
            for name, value in (("filename", filename), ("length", raw_length))
            if value is None or value == ""
        ]
        if missing:
            raise _invalid_arguments(*missing)
        assert filename is not None
        length = _parse_length(raw_length)
        if length is None or length < 0:
            raise _invalid_arguments("[ERROR] must be a positive integer [json-pointer:/length]")
        if length == 0:
            raise SlackError("missing_argument")  # documented: "when the length provided is 0"
        alt_txt = _str_param(params, "alt_txt")
        if alt_txt is not None and len(alt_txt) > 1000:
            raise SlackError("alt_txt_too_large")
        snippet_type = _str_param(params, "snippet_type")
        if snippet_type is not None and length > _SNIPPET_MAX_BYTES:
            raise SlackError("snippet_too_large")
        n = next(self._seq)
        file_id = f"F{n:010d}"
        token = hashlib.sha1(f"{file_id}:{time.time_ns()}".encode()).hexdigest()
        upload = _Upload(
            file_id=file_id,
            token=token,
            filename=filename,
            length=length,
            alt_txt=alt_txt,
            snippet_type=snippet_type,
        )
        self._uploads[token] = upload
        self._uploads_by_file[file_id] = upload
        upload_url = f"http://127.0.0.1:{self.port}{UPLOAD_PATH}{token}"
        return {"upload_url": upload_url, "file_id": file_id}

    def _files_complete_upload_external(self, params: Params) -> dict[str, Any]:
        """files.completeUploadExternal: make files of uploaded tickets and share them to
        ``channel_id`` / ``channels`` (one message per channel carrying all the files).
        All-or-nothing: after an error every ticket can still be completed."""
        entries = self._upload_entries(params.get("files"))
        uploads: list[tuple[_Upload, str]] = []
        for entry in entries:
            upload = self._uploads_by_file.get(entry["id"])
            if upload is None or upload.completed or upload.content is None:
                raise SlackError("file_not_found")
            if len(upload.content) != upload.length:
                log.warning(
                    "FakeSlack: %s: %d bytes uploaded but length=%d was declared",
                    upload.file_id,
                    len(upload.content),
                    upload.length,
                )
                raise SlackError("file_not_found")
            uploads.append((upload, entry.get("title") or upload.filename))
        targets = self._upload_targets(params)
        thread_ts = _str_param(params, "thread_ts")
        if thread_ts and len(targets) > 1:
            raise _invalid_arguments("[ERROR] thread_ts needs exactly one channel")
        initial_comment = _str_param(params, "initial_comment")
        blocks = None
        if initial_comment is None and params.get("blocks") is not None:
            _, blocks, _ = self._message_content({"blocks": params["blocks"]})
        # every check passed: from here on nothing fails
        created = int(time.time())
        objects = [self._file_object(upload, title, created) for upload, title in uploads]
        for obj in objects:
            obj["is_public"] = any(not self._channels[c].is_im for c in targets)
        share_keys = ("shares", "channels", "groups", "ims", "has_more_shares")
        message_files = [{k: v for k, v in o.items() if k not in share_keys} for o in objects]
        message_ts: dict[str, str] = {}
        for channel_id in targets:
            ts = self._next_ts()
            message: dict[str, Any] = {
                "type": "message",
                "subtype": "file_share",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "app_id": APP_ID,
                "team": TEAM_ID,
                "text": initial_comment or "",
                "ts": ts,
                "upload": True,
                "display_as_bot": False,
                "files": copy.deepcopy(message_files),
                "blocks": self._assign_ids(blocks or []),
            }
            self._store_message(channel_id, message, thread_ts)
            message_ts[channel_id] = ts
            self._add_share(objects, channel_id, message)
        for (upload, title), obj in zip(uploads, objects, strict=True):
            upload.completed = True
            self._files[upload.file_id] = {
                "id": upload.file_id,
                "name": upload.filename,
                "title": title,
                "mimetype": obj["mimetype"],
                "size": obj["size"],
                "content": upload.content,
                "channels": list(targets),
                "message_ts": dict(message_ts),
                "initial_comment": initial_comment,
                "thread_ts": thread_ts,
                "alt_txt": upload.alt_txt,
                "snippet_type": upload.snippet_type,
                "file": copy.deepcopy(obj),
            }
        return {"files": objects}

    # ----------------------------------------------------------------- file helpers

    @staticmethod
    def _upload_entries(raw: Any) -> list[dict[str, Any]]:
        """The ``files`` argument: a non-empty array of {"id", "title"?}, duplicates dropped."""
        if raw is None or raw == "":
            raise _invalid_arguments("[ERROR] missing required field: files")
        if not isinstance(raw, list) or not raw:
            raise _invalid_arguments("[ERROR] must be a non-empty array [json-pointer:/files]")
        entries: list[dict[str, Any]] = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise _invalid_arguments(
                    f"[ERROR] missing required field: id [json-pointer:/files/{i}]"
                )
            if entry.get("title") is not None and not isinstance(entry["title"], str):
                raise _invalid_arguments(
                    f"[ERROR] must be a string [json-pointer:/files/{i}/title]"
                )
            if all(e["id"] != entry["id"] for e in entries):
                entries.append(entry)
        return entries

    def _upload_targets(self, params: Params) -> list[str]:
        """Channels to share in: ``channel_id`` (a C/G/D/Z id) plus ``channels`` (comma
        separated channel or user ids; a user id means the bot's DM with that user)."""
        targets: list[str] = []
        channel_id = _str_param(params, "channel_id")
        if channel_id is not None:
            if not _UPLOAD_CHANNEL_RE.match(channel_id):
                raise _invalid_arguments(_UPLOAD_CHANNEL_ERROR)
            targets.append(self._upload_channel(channel_id, users=False))
        raw = params.get("channels")
        names = [str(c) for c in raw] if isinstance(raw, list) else str(raw or "").split(",")
        names = [n.strip() for n in names if n.strip()]
        if len(names) > 100:
            raise SlackError("channels_limit_exceeded")
        for name in names:
            channel = self._upload_channel(name, users=True)
            if channel not in targets:
                targets.append(channel)
        return targets

    def _upload_channel(self, value: str, *, users: bool) -> str:
        """A share target by id: channel_not_found / not_in_channel like chat.postMessage."""
        known = value in self._channels or any(value == self.dm_channel_id(u) for u in self._users)
        if known or (users and value in self._users):
            return self._resolve_channel(value)
        raise SlackError("channel_not_found")

    def _file_object(self, upload: _Upload, title: str, created: int) -> dict[str, Any]:
        """A file object like files.completeUploadExternal answers (shares filled later)."""
        assert upload.content is not None
        fid, name = upload.file_id, upload.filename
        mimetype, filetype, pretty_type = _file_type(name, upload.snippet_type)
        quoted = quote(name)
        obj: dict[str, Any] = {
            "id": fid,
            "created": created,
            "timestamp": created,
            "name": name,
            "title": title,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": pretty_type,
            "user": BOT_USER_ID,
            "user_team": TEAM_ID,
            "editable": upload.snippet_type is not None,
            "size": len(upload.content),
            "mode": "snippet" if upload.snippet_type else "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"https://files.slack.com/files-pri/{TEAM_ID}-{fid}/{quoted}",
            "url_private_download": (
                f"https://files.slack.com/files-pri/{TEAM_ID}-{fid}/download/{quoted}"
            ),
            "permalink": f"{PERMALINK_BASE}/files/{BOT_USER_ID}/{fid}/{quoted}",
            "permalink_public": f"https://slack-files.com/{TEAM_ID}-{fid}-{upload.token[:10]}",
            "comments_count": 0,
            "is_starred": False,
            "shares": {},
            "channels": [],
            "groups": [],
            "ims": [],
            "has_more_shares": False,
            "has_rich_preview": False,
            "file_access": "visible",
        }
        if upload.alt_txt is not None:
            obj["alt_txt"] = upload.alt_txt
        return obj

    def _add_share(
        self, objects: list[dict[str, Any]], channel_id: str, message: dict[str, Any]
    ) -> None:
        """Record on each file object that it was shared by ``message`` in ``channel_id``."""
        channel = self._channels[channel_id]
        share: dict[str, Any] = {
            "reply_users": [],
            "reply_users_count": 0,
            "reply_count": 0,
            "ts": message["ts"],
            "team_id": TEAM_ID,
            "share_user_id": BOT_USER_ID,
            "source": "UNKNOWN",
            "is_silent_share": False,
        }
        if not channel.is_im:
            share["channel_name"] = channel.name
        if message.get("thread_ts"):
            share["thread_ts"] = message["thread_ts"]
        kind = "private" if channel.is_im else "public"
        for obj in objects:
            obj["shares"].setdefault(kind, {})[channel_id] = [copy.deepcopy(share)]
            obj["ims" if channel.is_im else "channels"].append(channel_id)

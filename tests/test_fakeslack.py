"""Tests of tests/fakeslack.py, driven through the real slack_sdk.WebClient."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from http.client import RemoteDisconnected
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import FixedValueRetryIntervalCalculator
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from tests.fakeslack import (
    DEFAULT_APP_TOKEN,
    RESPONSE_URL_METHOD,
    UPLOAD_METHOD,
    Call,
    FakeSlack,
    SlackError,
)

TOKEN = "xoxb-test-token"
QUICK = FixedValueRetryIntervalCalculator(fixed_internal=0.05)  # keeps retry tests fast


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN) as fake:
        fake.add_user("U1", tz="Europe/Berlin", name="ana", email="ana@example.com")
        fake.add_user("U2", tz=None, name="bo", email="Bo@Example.com")
        fake.add_user("U3", name="gone", deleted=True)
        fake.set_usergroup("S1", ["U1", "U2"])
        fake.add_channel("C1", name="marketing-feedback")
        fake.add_channel("C2", name="elsewhere", is_member=False)
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    # retry_handlers=[]: failures surface directly unless a test opts into retries.
    return WebClient(token=TOKEN, base_url=slack.url, retry_handlers=[])


def api_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    return excinfo.value.response["error"]


def modal(title: str = "Feedback", **extra: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": "feedback",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [
            {
                "type": "input",
                "block_id": "note",
                "label": {"type": "plain_text", "text": "Note"},
                "element": {"type": "plain_text_input", "action_id": "note"},
            }
        ],
    }
    view.update(extra)
    return view


def section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


# ----------------------------------------------------------------------------- auth & plumbing


def test_url_and_context_manager() -> None:
    fake = FakeSlack(bot_token=TOKEN)
    with fake:
        assert fake.url.startswith("http://127.0.0.1:") and fake.url.endswith("/api/")
        assert WebClient(token=TOKEN, base_url=fake.url).auth_test()["ok"] is True
    fake.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = fake.url


def test_auth_test(client: WebClient, slack: FakeSlack) -> None:
    resp = client.auth_test()
    assert resp["team_id"] == "T0001"
    assert resp["user_id"] == "UBOT"
    assert resp["bot_id"] == "B0001"
    assert {"url", "team", "user"} <= set(resp.data)
    (call,) = slack.calls_to("auth.test")
    assert call.status == 200
    assert call.headers["authorization"] == f"Bearer {TOKEN}"


def test_missing_token_is_not_authed(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        WebClient(base_url=slack.url).auth_test()
    assert api_error(exc) == "not_authed"


def test_wrong_token_is_invalid_auth(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        WebClient(token="xoxb-wrong", base_url=slack.url).chat_postMessage(channel="C1", text="x")
    assert api_error(exc) == "invalid_auth"
    assert slack.calls_to("chat.postMessage") == []
    (failed,) = slack.calls_to("chat.postMessage", include_failed=True)
    assert failed.response == {"ok": False, "error": "invalid_auth"}
    assert slack.messages["C1"] == {}


def test_token_as_form_field_and_get_query(slack: FakeSlack) -> None:
    data = f"token={TOKEN}&user=U1".encode()
    with urllib.request.urlopen(slack.url + "users.info", data=data, timeout=5) as resp:
        assert json.load(resp)["user"]["id"] == "U1"
    with urllib.request.urlopen(slack.url + f"users.info?token={TOKEN}&user=U2", timeout=5) as resp:
        assert json.load(resp)["user"]["name"] == "bo"


def test_token_inside_json_body_is_not_accepted(slack: FakeSlack) -> None:
    # Slack only reads the token of a JSON request from the Authorization header.
    req = urllib.request.Request(
        slack.url + "auth.test",
        data=json.dumps({"token": TOKEN}).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp) == {"ok": False, "error": "not_authed"}


def test_apps_connections_open_answers_the_socket_url(slack: FakeSlack) -> None:
    slack.socket_url = "ws://127.0.0.1:9/link/?ticket=fixed&app_id=A0001"
    app_client = WebClient(base_url=slack.url)
    response = app_client.apps_connections_open(app_token=DEFAULT_APP_TOKEN)
    assert response.data == {"ok": True, "url": "ws://127.0.0.1:9/link/?ticket=fixed&app_id=A0001"}
    (call,) = slack.calls_to("apps.connections.open")
    assert call.headers["authorization"] == f"Bearer {DEFAULT_APP_TOKEN}"
    # a callable (FakeSocketMode.issue_url) is asked once per request: a fresh ticket each time
    tickets = iter(["t1", "t2"])
    slack.socket_url = lambda: f"ws://127.0.0.1:9/link/?ticket={next(tickets)}"
    urls = [app_client.apps_connections_open(app_token=DEFAULT_APP_TOKEN)["url"] for _ in "ab"]
    assert urls == ["ws://127.0.0.1:9/link/?ticket=t1", "ws://127.0.0.1:9/link/?ticket=t2"]


def test_apps_connections_open_needs_the_app_token_in_the_header() -> None:
    with FakeSlack(bot_token=TOKEN, app_token="xapp-1-A0001-1-mine") as slack:
        slack.socket_url = "ws://127.0.0.1:9/link/?ticket=t"
        app_client = WebClient(base_url=slack.url, retry_handlers=[])
        assert app_client.apps_connections_open(app_token="xapp-1-A0001-1-mine")["ok"] is True
        cases = {
            # a valid token of the wrong type (slack-ruby/slack-ruby-client#363)
            TOKEN: "not_allowed_token_type",
            "xapp-1-revoked": "invalid_auth",
            DEFAULT_APP_TOKEN: "invalid_auth",  # not this fake's app token
        }
        for token, error in cases.items():
            with pytest.raises(SlackApiError) as exc:
                app_client.apps_connections_open(app_token=token)
            assert api_error(exc) == error, token
        # only the Authorization header counts (slackapi/python-slack-sdk#1877)
        data = b"token=xapp-1-A0001-1-mine"
        with urllib.request.urlopen(slack.url + "apps.connections.open", data=data) as resp:
            assert json.load(resp) == {"ok": False, "error": "invalid_auth"}
        with urllib.request.urlopen(slack.url + "apps.connections.open", data=b"") as resp:
            assert json.load(resp) == {"ok": False, "error": "not_authed"}
        # and the app token is no bot token
        with pytest.raises(SlackApiError) as exc:
            WebClient(token="xapp-1-A0001-1-mine", base_url=slack.url).auth_test()
        assert api_error(exc) == "invalid_auth"
        assert len(slack.calls_to("apps.connections.open")) == 1


def test_apps_connections_open_without_a_socket_url_fails_loudly(slack: FakeSlack) -> None:
    app_client = WebClient(base_url=slack.url, retry_handlers=[])
    with pytest.raises(SlackApiError) as exc:
        app_client.apps_connections_open(app_token=DEFAULT_APP_TOKEN)
    assert exc.value.response.status_code == 500
    assert "socket_url is not set" in slack.server_errors[0]


def test_unknown_method(client: WebClient, slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMesage", params={"channel": "C1", "text": "typo"})
    assert api_error(exc) == "unknown_method"
    assert exc.value.response.status_code == 200


def test_form_only_method_ignores_json_body(client: WebClient) -> None:
    # users.info is not a JSON-accepting method, so a JSON body's "user" is not read.
    with pytest.raises(SlackApiError) as exc:
        client.api_call("users.info", json={"user": "U1"})
    assert api_error(exc) == "user_not_found"
    assert client.users_info(user="U1")["user"]["id"] == "U1"


def test_invalid_json_body(slack: FakeSlack) -> None:
    req = urllib.request.Request(
        slack.url + "chat.postMessage",
        data=b"{not json",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp)["error"] == "invalid_json"


def test_json_without_charset_gets_warning(slack: FakeSlack) -> None:
    req = urllib.request.Request(
        slack.url + "auth.test",
        data=b"{}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = json.load(resp)
    assert body["ok"] is True
    assert body["response_metadata"]["warnings"] == ["missing_charset"]


def test_bolt_app_starts_against_fake(slack: FakeSlack) -> None:
    from slack_bolt import App

    App(signing_secret="secret", client=WebClient(token=TOKEN, base_url=slack.url))
    assert len(slack.calls_to("auth.test")) == 1


# ----------------------------------------------------------------------------- chat.postMessage


def test_post_message_text_and_blocks(client: WebClient, slack: FakeSlack) -> None:
    blocks = [section("*hello*", "b1"), {"type": "divider"}]
    resp = client.chat_postMessage(channel="C1", text="hello", blocks=blocks)
    ts = resp["ts"]
    assert resp["channel"] == "C1"
    whole, frac = ts.split(".")
    assert len(frac) == 6 and abs(int(whole) - time.time()) < 60
    assert resp["message"]["text"] == "hello"
    assert resp["message"]["bot_id"] == "B0001"
    stored = slack.messages["C1"][ts]
    assert stored["blocks"][0] == blocks[0]
    assert stored["blocks"][1]["block_id"]  # Slack fills in missing block_ids
    (call,) = slack.calls_to("chat.postMessage")
    assert call.params["blocks"] == blocks  # decoded JSON, exactly as sent
    assert call.params["channel"] == "C1"
    assert call.response is not None and call.response["ts"] == ts


def test_post_message_form_encoded_blocks_are_decoded(client: WebClient, slack: FakeSlack) -> None:
    blocks = [section("form")]
    client.api_call("chat.postMessage", data={"channel": "C1", "blocks": json.dumps(blocks)})
    (call,) = slack.calls_to("chat.postMessage")
    assert call.params["blocks"] == blocks


def test_post_message_ts_unique_and_increasing_under_concurrency(slack: FakeSlack) -> None:
    def post(i: int) -> None:
        WebClient(token=TOKEN, base_url=slack.url).chat_postMessage(channel="C1", text=str(i))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = slack.wait_for("chat.postMessage", count=20)
    stamps = [c.response["ts"] for c in calls if c.response]
    assert len(set(stamps)) == 20
    assert sorted(stamps, key=float) == sorted(stamps)
    assert len(slack.messages["C1"]) == 20


def test_post_message_to_user_id_goes_to_dm(client: WebClient, slack: FakeSlack) -> None:
    resp = client.chat_postMessage(channel="U1", text="hi")
    dm = client.conversations_open(users="U1")["channel"]["id"]
    assert dm.startswith("D") and resp["channel"] == dm == slack.dm_channel_id("U1")
    assert client.chat_postMessage(channel=dm, text="again")["channel"] == dm
    assert len(slack.messages[dm]) == 2


def test_post_message_by_channel_name(client: WebClient) -> None:
    assert client.chat_postMessage(channel="#marketing-feedback", text="x")["channel"] == "C1"


def test_post_message_thread_replies(client: WebClient, slack: FakeSlack) -> None:
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    reply = client.chat_postMessage(channel="C1", text="r1", thread_ts=parent)["ts"]
    nested = client.chat_postMessage(channel="C1", text="r2", thread_ts=reply)["ts"]
    messages = slack.messages["C1"]
    assert messages[reply]["thread_ts"] == parent
    assert messages[nested]["thread_ts"] == parent  # a reply to a reply joins the thread
    assert messages[parent]["reply_count"] == 2
    # Slack does not reject an unknown thread_ts.
    assert client.chat_postMessage(channel="C1", text="x", thread_ts="1.000001")["ok"]


def test_conversations_replies_lists_the_thread_parent_first(
    client: WebClient, slack: FakeSlack
) -> None:
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    marker = {"event_type": "closeloop_test", "event_payload": {"n": 1}}
    first = client.chat_postMessage(channel="C1", text="r1", thread_ts=parent, metadata=marker)
    nested = client.chat_postMessage(channel="C1", text="r2", thread_ts=first["ts"])["ts"]
    client.chat_postMessage(channel="C1", text="elsewhere")  # not in the thread

    thread = client.conversations_replies(channel="C1", ts=parent)
    assert [m["text"] for m in thread["messages"]] == ["parent", "r1", "r2"]
    assert thread["has_more"] is False and "response_metadata" not in thread.data
    head = thread["messages"][0]
    assert (head["ts"], head["thread_ts"], head["reply_count"]) == (parent, parent, 2)
    assert head["latest_reply"] == nested
    assert all(m["thread_ts"] == parent for m in thread["messages"])
    assert "metadata" not in thread["messages"][1]  # only when asked for
    # Any message of the thread names it; metadata comes with include_all_metadata.
    again = client.conversations_replies(channel="C1", ts=nested, include_all_metadata=True)
    assert [m["ts"] for m in again["messages"]] == [m["ts"] for m in thread["messages"]]
    assert again["messages"][1]["metadata"] == marker
    # A message without replies comes back alone; so does a DM's.
    lone = client.chat_postMessage(channel="C1", text="lone")["ts"]
    assert [m["text"] for m in client.conversations_replies(channel="C1", ts=lone)["messages"]] == [
        "lone"
    ]
    dm = client.chat_postMessage(channel="U1", text="hello")
    answer = client.conversations_replies(channel=dm["channel"], ts=dm["ts"])
    assert [m["text"] for m in answer["messages"]] == ["hello"]
    # conversations.history lists the parent, never its replies.
    top = client.conversations_history(channel="C1")["messages"]
    assert {m["text"] for m in top} == {"parent", "elsewhere", "lone"}


def test_conversations_replies_pages_with_a_cursor(client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    for n in range(5):
        client.chat_postMessage(channel="C1", text=f"r{n}", thread_ts=parent)
    seen, pages, cursor = [], 0, None
    while True:
        page = client.conversations_replies(channel="C1", ts=parent, limit=2, cursor=cursor)
        pages += 1
        assert len(page["messages"]) <= 2
        seen += [m["text"] for m in page["messages"]]
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        assert page["has_more"] is bool(cursor)
        if not cursor:
            break
    assert seen == ["parent", "r0", "r1", "r2", "r3", "r4"] and pages == 3
    with pytest.raises(SlackApiError) as excinfo:
        client.conversations_replies(channel="C1", ts=parent, cursor="not a cursor")
    assert api_error(excinfo) == "invalid_cursor"


def test_conversations_replies_time_range(client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    stamps = [
        client.chat_postMessage(channel="C1", text=f"r{n}", thread_ts=parent)["ts"]
        for n in range(3)
    ]
    inside = client.conversations_replies(
        channel="C1", ts=parent, oldest=stamps[0], latest=stamps[2]
    )
    assert [m["text"] for m in inside["messages"]] == ["parent", "r1"]
    inclusive = client.conversations_replies(
        channel="C1", ts=parent, oldest=stamps[0], latest=stamps[2], inclusive=True
    )
    assert [m["text"] for m in inclusive["messages"]] == ["parent", "r0", "r1", "r2"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C999", "ts": "1.000001"}, "channel_not_found"),
        ({"channel": "C2", "ts": "1.000001"}, "not_in_channel"),
        ({"channel": "C1", "ts": "1.000001"}, "thread_not_found"),
        ({"channel": "C1", "ts": ""}, "thread_not_found"),
    ],
)
def test_conversations_replies_rejections(
    client: WebClient, kwargs: dict[str, Any], error: str
) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client.conversations_replies(**kwargs)
    assert api_error(excinfo) == error


def test_conversations_replies_without_a_channel(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("conversations.replies", http_verb="GET", params={"ts": "1.000001"})
    assert api_error(excinfo) == "channel_not_found"


def history_texts(client: WebClient, max_pages: int = 20, **kwargs: Any) -> list[list[str]]:
    """conversations.history page by page (texts of each page), checking the paging fields."""
    pages: list[list[str]] = []
    cursor = None
    for _ in range(max_pages):
        page = client.conversations_history(channel="C1", cursor=cursor, **kwargs)
        pages.append([m["text"] for m in page["messages"]])
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        assert page["has_more"] is bool(cursor)
        if not cursor:
            assert "response_metadata" not in page.data  # as before: only while more follow
            return pages
    raise AssertionError(f"still more after {max_pages} pages: {pages}")


def test_conversations_history_pages_with_a_cursor(client: WebClient, slack: FakeSlack) -> None:
    stamps = [slack.add_message("C1", f"m{n}", user="U1") for n in range(7)]
    assert history_texts(client, limit=3) == [["m6", "m5", "m4"], ["m3", "m2", "m1"], ["m0"]]
    # Slack's cursor: base64 of next_ts:<the next (older) message's ts in microseconds>
    first = client.conversations_history(channel="C1", limit=3)
    cursor = first["response_metadata"]["next_cursor"]
    assert base64.b64decode(cursor).decode() == f"next_ts:{stamps[3].replace('.', '')}"
    # A message posted while paging is newer than the cursor: no duplicate, nothing skipped.
    slack.add_message("C1", "new", user="U1")
    second = client.conversations_history(channel="C1", limit=3, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["m3", "m2", "m1"]
    for bad in ("not a cursor", base64.b64encode(b"user:U1").decode()):
        with pytest.raises(SlackApiError) as excinfo:
            client.conversations_history(channel="C1", cursor=bad)
        assert api_error(excinfo) == "invalid_cursor"


def test_conversations_history_default_and_maximum_limit(
    client: WebClient, slack: FakeSlack
) -> None:
    for n in range(1001):
        slack.add_message("C1", f"m{n}", user="U1")
    page = client.conversations_history(channel="C1")
    assert len(page["messages"]) == 100 and page["has_more"] is True  # default limit 100
    assert page["messages"][0]["text"] == "m1000"
    assert [len(p) for p in history_texts(client, limit=5000)] == [999, 2]  # maximum 999
    walked = sum(history_texts(client, max_pages=20), [])
    assert walked == [f"m{n}" for n in range(1000, -1, -1)]


def test_conversations_history_page_cap(client: WebClient, slack: FakeSlack) -> None:
    assert slack.history_page_cap is None
    for n in range(5):
        slack.add_message("C1", f"m{n}", user="U1")
    slack.history_page_cap = 2  # Slack answers fewer than limit asks for
    assert history_texts(client) == [["m4", "m3"], ["m2", "m1"], ["m0"]]
    assert history_texts(client, limit=1) == [["m4"], ["m3"], ["m2"], ["m1"], ["m0"]]
    slack.history_page_cap = None
    assert history_texts(client, limit=3) == [["m4", "m3", "m2"], ["m1", "m0"]]
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            slack.history_page_cap = bad  # type: ignore[assignment]


def test_conversations_history_cursor_keeps_the_time_range(
    client: WebClient, slack: FakeSlack
) -> None:
    marker = {"event_type": "closeloop_test", "event_payload": {"n": 1}}
    stamps = [
        client.chat_postMessage(channel="C1", text=f"m{n}", metadata=marker)["ts"] for n in range(6)
    ]
    client.chat_postMessage(channel="C1", text="reply", thread_ts=stamps[3])  # not listed
    bounds = {"oldest": stamps[1], "latest": stamps[5], "limit": 2}
    assert history_texts(client, **bounds) == [["m4", "m3"], ["m2"]]
    assert history_texts(client, inclusive=True, **bounds) == [["m5", "m4"], ["m3", "m2"], ["m1"]]
    last = client.conversations_history(channel="C1", limit=2, oldest=stamps[3])
    assert [m["text"] for m in last["messages"]] == ["m5", "m4"] and last["has_more"] is False
    # metadata only when asked for, on every page
    page = client.conversations_history(channel="C1", limit=2, include_all_metadata=True)
    cursor = page["response_metadata"]["next_cursor"]
    more = client.conversations_history(
        channel="C1", limit=2, cursor=cursor, include_all_metadata=True
    )
    assert all(m["metadata"] == marker for m in page["messages"] + more["messages"])
    plain = client.conversations_history(channel="C1", limit=2, cursor=cursor)
    assert all("metadata" not in m for m in plain["messages"])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": "no channel"}, "channel_not_found"),
        ({"channel": "C999", "text": "x"}, "channel_not_found"),
        ({"channel": "U404", "text": "x"}, "channel_not_found"),
        ({"channel": "C2", "text": "x"}, "not_in_channel"),
        ({"channel": "C1"}, "no_text"),
        ({"channel": "C1", "text": "", "blocks": []}, "no_text"),
        ({"channel": "C1", "blocks": [section(str(i)) for i in range(51)]}, "invalid_blocks"),
        ({"channel": "C1", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
        ({"channel": "C1", "blocks": [{"text": "no type"}]}, "invalid_blocks"),
        ({"channel": "C1", "blocks": ["not a dict"]}, "invalid_blocks"),
        ({"channel": "C1", "blocks": [{"type": "sectoin"}]}, "invalid_blocks"),
        ({"channel": "C1", "blocks": [section("a", "x"), section("b", "x")]}, "invalid_blocks"),
        (
            {
                "channel": "C1",
                "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
            },
            "invalid_blocks",
        ),
        ({"channel": "C1", "blocks": {"type": "section"}}, "invalid_blocks_format"),
        ({"channel": "C1", "attachments": [{}] * 101}, "too_many_attachments"),
    ],
)
def test_post_message_rejections(
    client: WebClient, slack: FakeSlack, kwargs: dict[str, Any], error: str
) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessage", json=kwargs)
    assert api_error(exc) == error
    assert all(not m for m in slack.messages.values())


def test_invalid_blocks_messages_name_the_pointer(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="x", blocks=[section("x" * 3001)])
    assert exc.value.response["errors"] == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "divider"}] * 51)
    assert exc.value.response["response_metadata"]["messages"] == [
        "[ERROR] no more than 50 items allowed [json-pointer:/blocks]"
    ]


def test_post_message_exactly_at_limits_is_accepted(client: WebClient) -> None:
    client.chat_postMessage(channel="C1", text="x", blocks=[section(str(i)) for i in range(50)])
    client.chat_postMessage(channel="C1", text="x", blocks=[section("y" * 3000)])


def test_post_message_unparsable_form_blocks(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessage", data={"channel": "C1", "blocks": "[{oops"})
    assert api_error(exc) == "invalid_blocks_format"


# ----------------------------------------------------------------------------- chat.update


def test_chat_update(client: WebClient, slack: FakeSlack) -> None:
    ts = client.chat_postMessage(channel="C1", text="v1", blocks=[section("v1", "b")])["ts"]
    resp = client.chat_update(channel="C1", ts=ts, text="v2")
    assert (resp["channel"], resp["ts"], resp["text"]) == ("C1", ts, "v2")
    stored = slack.messages["C1"][ts]
    assert stored["text"] == "v2"
    assert stored["blocks"][0]["block_id"] == "b"  # omitted blocks are kept
    assert stored["edited"]["user"] == "UBOT"
    client.chat_update(channel="C1", ts=ts, text="v3", blocks=[])
    assert slack.messages["C1"][ts]["blocks"] == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C1", "ts": "1.000001", "text": "x"}, "message_not_found"),
        ({"channel": "C999", "ts": "1.000001", "text": "x"}, "channel_not_found"),
        ({"channel": "C1", "ts": "<posted>"}, "no_text"),
        ({"channel": "C1", "ts": "<posted>", "blocks": [{"type": "nope"}]}, "invalid_blocks"),
    ],
)
def test_chat_update_rejections(client: WebClient, kwargs: dict[str, Any], error: str) -> None:
    posted = client.chat_postMessage(channel="C1", text="v1")["ts"]
    if kwargs.get("ts") == "<posted>":
        kwargs = {**kwargs, "ts": posted}
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.update", json=kwargs)  # api_call: no client-side text warning
    assert api_error(exc) == error


def test_chat_update_of_someone_elses_message(client: WebClient, slack: FakeSlack) -> None:
    ts = slack.add_message("C1", "written by a person", user="U1")
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel="C1", ts=ts, text="hijack")
    assert api_error(exc) == "cant_update_message"


# ----------------------------------------------------------------------------- ephemeral & DMs


def test_post_ephemeral(client: WebClient, slack: FakeSlack) -> None:
    resp = client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert resp["message_ts"]
    assert slack.messages["C1"] == {}
    with pytest.raises(SlackApiError) as exc:
        client.chat_postEphemeral(channel="C1", user="U404", text="x")
    assert api_error(exc) == "user_not_in_channel"
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postEphemeral", json={"channel": "C1", "user": "U1"})
    assert api_error(exc) == "no_text"


def test_conversations_open(client: WebClient, slack: FakeSlack) -> None:
    first = client.conversations_open(users="U1")
    assert first["channel"]["id"] == slack.dm_channel_id("U1")
    again = client.conversations_open(users=["U1"], return_im=True)
    assert again["channel"]["id"] == first["channel"]["id"]
    assert again["already_open"] is True and again["channel"]["user"] == "U1"
    assert client.conversations_open(users="U2")["channel"]["id"] != first["channel"]["id"]
    for users, error in (("U404", "user_not_found"), ("U3", "user_disabled")):
        with pytest.raises(SlackApiError) as exc:
            client.conversations_open(users=users)
        assert api_error(exc) == error
    with pytest.raises(SlackApiError) as exc:
        client.api_call("conversations.open", params={})
    assert api_error(exc) == "users_list_not_supplied"


# ----------------------------------------------------------------------------- users & groups


def test_users_info(client: WebClient) -> None:
    user = client.users_info(user="U1")["user"]
    offset = datetime.now(ZoneInfo("Europe/Berlin")).utcoffset()
    assert offset is not None
    assert user["id"] == "U1" and user["name"] == "ana"
    assert user["tz"] == "Europe/Berlin"
    assert user["tz_offset"] == int(offset.total_seconds())
    assert user["tz_label"].startswith("Central European")
    assert user["is_bot"] is False and user["deleted"] is False
    assert user["profile"]["email"] == "ana@example.com"
    assert {"display_name", "real_name"} <= set(user["profile"])

    no_tz = client.users_info(user="U2")["user"]
    assert not {"tz", "tz_label", "tz_offset"} & set(no_tz)
    assert client.users_info(user="U3")["user"]["deleted"] is True
    assert client.users_info(user="UBOT")["user"]["is_bot"] is True

    with pytest.raises(SlackApiError) as exc:
        client.users_info(user="U404")
    assert api_error(exc) == "user_not_found"


def test_users_list_pages_through_everyone(client: WebClient) -> None:
    everyone = client.users_list()
    ids = [u["id"] for u in everyone["members"]]
    assert ids == sorted(ids) and {"U1", "U2", "U3", "UBOT"} <= set(ids)
    assert everyone["response_metadata"]["next_cursor"] == ""
    assert isinstance(everyone["cache_ts"], int)
    paged, cursor = [], None
    while True:
        page = client.users_list(limit=2, cursor=cursor)
        assert len(page["members"]) <= 2
        paged += [u["id"] for u in page["members"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert paged == ids
    assert next(u for u in everyone["members"] if u["id"] == "U1")["tz"] == "Europe/Berlin"
    with pytest.raises(SlackApiError) as exc:
        client.users_list(cursor="bm90IGEgY3Vyc29y")  # base64, but not a users.list cursor
    assert api_error(exc) == "invalid_cursor"


def test_users_lookup_by_email(client: WebClient) -> None:
    assert client.users_lookupByEmail(email="ana@example.com")["user"]["id"] == "U1"
    assert client.users_lookupByEmail(email="bo@example.COM")["user"]["id"] == "U2"
    with pytest.raises(SlackApiError) as exc:
        client.users_lookupByEmail(email="nobody@example.com")
    assert api_error(exc) == "users_not_found"


def test_usergroups_users_list(client: WebClient, slack: FakeSlack) -> None:
    assert client.usergroups_users_list(usergroup="S1")["users"] == ["U1", "U2"]
    slack.set_usergroup("S1", ["U2"])
    assert client.usergroups_users_list(usergroup="S1")["users"] == ["U2"]
    with pytest.raises(SlackApiError) as exc:
        client.usergroups_users_list(usergroup="S404")
    assert api_error(exc) == "no_such_subteam"


# ----------------------------------------------------------------------------- views


def test_views_open(client: WebClient, slack: FakeSlack) -> None:
    resp = client.views_open(trigger_id=slack.new_trigger_id(), view=modal(private_metadata="42"))
    view = resp["view"]
    assert view["id"].startswith("V") and view["hash"]
    assert view["root_view_id"] == view["id"]
    assert view["private_metadata"] == "42" and view["callback_id"] == "feedback"
    assert view["state"] == {"values": {}}
    assert slack.views[view["id"]]["title"]["text"] == "Feedback"


def test_views_open_title_too_long(client: WebClient, slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="t1", view=modal(title="x" * 30))
    assert api_error(exc) == "invalid_arguments"
    assert exc.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
    ]
    assert slack.views == {}
    client.views_open(trigger_id="t1", view=modal(title="x" * 24))  # trigger not used up


def test_views_open_trigger_rules(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="", view=modal())
    assert api_error(exc) == "invalid_arguments"
    assert exc.value.response["response_metadata"]["messages"] == ["invalid `trigger_id`"]
    client.views_open(trigger_id="t-once", view=modal())
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="t-once", view=modal())
    assert api_error(exc) == "exchanged_trigger_id"


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        (modal(submit={"type": "plain_text", "text": "s" * 25}), "/view/submit/text"),
        (modal(close={"type": "plain_text", "text": "c" * 25}), "/view/close/text"),
        ({**modal(), "title": {"type": "mrkdwn", "text": "t"}}, "/view/title/type"),
        (modal(callback_id="c" * 256), "/view/callback_id"),
        (modal(private_metadata="p" * 3001), "/view/private_metadata"),
        (modal(blocks=[section(str(i)) for i in range(101)]), "/view/blocks"),
        (
            modal(blocks=[{"type": "input", "element": {"type": "plain_text_input"}}]),
            "/view/blocks/0",
        ),
        (
            modal(blocks=[{"type": "input", "label": {"type": "plain_text", "text": "L"}}]),
            "/view/blocks/0",
        ),
        (modal(blocks=[section("a", "same"), section("b", "same")]), "/view/blocks/1/block_id"),
        (modal(submit=None), "/view"),
        ({"type": "home", "blocks": []}, "/view/type"),
        ({"type": "modal", "blocks": []}, "/view"),
    ],
)
def test_views_open_validation(
    client: WebClient, slack: FakeSlack, view: dict[str, Any], pointer: str
) -> None:
    view = {k: v for k, v in view.items() if v is not None}
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=slack.new_trigger_id(), view=view)
    assert api_error(exc) == "invalid_arguments"
    messages = exc.value.response["response_metadata"]["messages"]
    assert any(
        m.startswith("[ERROR] ") and m.endswith(f"[json-pointer:{pointer}]") for m in messages
    )


def test_views_update(client: WebClient, slack: FakeSlack) -> None:
    opened = client.views_open(trigger_id=slack.new_trigger_id(), view=modal(external_id="ext-1"))[
        "view"
    ]
    updated = client.views_update(
        view_id=opened["id"], hash=opened["hash"], view=modal(title="Thanks", external_id="ext-1")
    )["view"]
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    assert slack.views[opened["id"]]["title"]["text"] == "Thanks"
    by_external = client.views_update(external_id="ext-1", view=modal(title="Again"))["view"]
    assert by_external["id"] == opened["id"]

    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id="V404", view=modal())
    assert api_error(exc) == "not_found"
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal())
    assert api_error(exc) == "hash_conflict"
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id=opened["id"], view=modal(title="y" * 25))
    assert api_error(exc) == "invalid_arguments"


def test_views_open_duplicate_external_id(client: WebClient, slack: FakeSlack) -> None:
    client.views_open(trigger_id=slack.new_trigger_id(), view=modal(external_id="dup"))
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=slack.new_trigger_id(), view=modal(external_id="dup"))
    assert api_error(exc) == "duplicate_external_id"


def test_views_push(client: WebClient, slack: FakeSlack) -> None:
    pushed = client.views_push(trigger_id=slack.new_trigger_id(), view=modal(title="Step 2"))
    assert slack.views[pushed["view"]["id"]]["title"]["text"] == "Step 2"
    with pytest.raises(SlackApiError) as exc:
        client.views_push(trigger_id="t", view=modal(title="z" * 25))
    assert api_error(exc) == "invalid_arguments"


def test_views_publish(client: WebClient, slack: FakeSlack) -> None:
    home = {"type": "home", "blocks": [section("Welcome")]}
    first = client.views_publish(user_id="U1", view=home)["view"]
    second = client.views_publish(user_id="U1", view={"type": "home", "blocks": []})["view"]
    assert first["id"] == second["id"] and first["type"] == "home"
    assert slack.home_views["U1"]["blocks"] == []
    assert slack.views[first["id"]]["hash"] == second["hash"]

    with pytest.raises(SlackApiError) as exc:
        client.views_publish(user_id="U1", view=modal())
    assert api_error(exc) == "invalid_arguments"
    with pytest.raises(SlackApiError) as exc:
        client.views_publish(user_id="U404", view=home)
    assert exc.value.response["response_metadata"]["messages"] == ["invalid `user_id`"]
    with pytest.raises(SlackApiError) as exc:
        client.views_publish(user_id="U1", view={"type": "home", "blocks": [section("x")] * 101})
    assert api_error(exc) == "invalid_arguments"


# ----------------------------------------------------------------------------- reactions


def test_reactions_add(client: WebClient, slack: FakeSlack) -> None:
    slack.granted |= {"reactions:write"}  # Closeloop itself does not react (manifest.yml)
    ts = slack.add_message("C1", "great idea", user="U1")
    client.reactions_add(channel="C1", name="white_check_mark", timestamp=ts)
    assert slack.messages["C1"][ts]["reactions"] == [
        {"name": "white_check_mark", "users": ["UBOT"], "count": 1}
    ]
    for kwargs, error in (
        ({"channel": "C1", "name": "white_check_mark", "timestamp": ts}, "already_reacted"),
        ({"channel": "C1", "name": "eyes", "timestamp": "1.000001"}, "message_not_found"),
        ({"channel": "C1", "name": "eyes", "timestamp": "yesterday"}, "bad_timestamp"),
        ({"channel": "C999", "name": "eyes", "timestamp": ts}, "channel_not_found"),
    ):
        with pytest.raises(SlackApiError) as exc:
            client.reactions_add(**kwargs)
        assert api_error(exc) == error


# ----------------------------------------------------------------------------- files & permalinks

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"  # not valid UTF-8


def upload_url(client: WebClient, filename: str = "a.txt", length: int = 3) -> tuple[str, str]:
    resp = client.files_getUploadURLExternal(filename=filename, length=length)
    return resp["file_id"], resp["upload_url"]


def post_bytes(
    url: str, data: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """POST to an upload URL like slack_sdk does; (status, Content-Type, body)."""
    req = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_files_upload_v2(client: WebClient, slack: FakeSlack) -> None:
    resp = client.files_upload_v2(
        channel="C1", content=PNG, filename="chart.png", title="Chart", initial_comment="hi"
    )
    file = resp["file"]  # slack_sdk copies files[0] there
    assert resp["files"] == [file]
    assert file["id"].startswith("F") and file["name"] == "chart.png"
    assert (file["title"], file["mimetype"], file["size"]) == ("Chart", "image/png", len(PNG))
    assert file["channels"] == ["C1"]
    stored = slack.files[file["id"]]
    assert stored["content"] == PNG  # the exact bytes
    assert stored["channels"] == ["C1"] and stored["initial_comment"] == "hi"
    assert (stored["name"], stored["title"], stored["size"]) == ("chart.png", "Chart", len(PNG))
    ts = stored["message_ts"]["C1"]
    assert file["shares"]["public"]["C1"][0]["ts"] == ts
    message = slack.messages["C1"][ts]
    assert message["text"] == "hi" and message["user"] == "UBOT"
    assert [f["id"] for f in message["files"]] == [file["id"]]
    assert [c.method for c in slack.calls] == [
        "files.getUploadURLExternal",
        UPLOAD_METHOD,
        "files.completeUploadExternal",
    ]
    get_url, upload, complete = slack.calls
    assert get_url.params == {"filename": "chart.png", "length": str(len(PNG))}
    assert upload.ok and upload.response == {"ok": True, "body": f"OK - {len(PNG)}"}
    assert upload.params["content"] == PNG and upload.params["file_id"] == file["id"]
    assert "authorization" not in upload.headers  # the upload URL needs no token
    assert complete.params["files"] == [{"id": file["id"], "title": "Chart"}]  # decoded JSON


def test_files_upload_v2_needs_channel_membership(client: WebClient, slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.files_upload_v2(channel="C2", content=b"x", filename="a.txt")
    assert api_error(exc) == "not_in_channel"
    with pytest.raises(SlackApiError) as exc:
        client.files_upload_v2(channel="C999", content=b"x", filename="a.txt")
    assert api_error(exc) == "channel_not_found"
    with pytest.raises(SlackApiError) as exc:  # a user id is no channel_id (bolt-js#2115)
        client.files_upload_v2(channel="U1", content=b"x", filename="a.txt")
    assert api_error(exc) == "invalid_arguments"
    assert slack.files == {} and slack.messages["C2"] == {}
    assert len(slack.calls_to(UPLOAD_METHOD)) == 3  # the bytes went up each time


def test_files_upload_v2_completion_rate_limit_is_retried(slack: FakeSlack) -> None:
    slack.fail_next("files.completeUploadExternal", error="ratelimited", retry_after=1)
    client = WebClient(
        token=TOKEN,
        base_url=slack.url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    started = time.monotonic()
    resp = client.files_upload_v2(channel="C1", content="héllo", filename="a.txt")
    assert time.monotonic() - started >= 1.0  # waited for Retry-After
    first, second = slack.calls_to("files.completeUploadExternal", include_failed=True)
    assert (first.status, first.error) == (429, "ratelimited")
    assert second.ok and second.status == 200
    assert slack.files[resp["file"]["id"]]["content"] == "héllo".encode()
    assert len(slack.messages["C1"]) == 1


def test_fail_next_on_upload_steps(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("files.getUploadURLExternal", error="file_uploads_disabled")
    with pytest.raises(SlackApiError) as exc:
        client.files_upload_v2(channel="C1", content=b"x", filename="a.txt")
    assert api_error(exc) == "file_uploads_disabled"
    slack.fail_next(UPLOAD_METHOD, status=500)
    with pytest.raises(urllib.error.HTTPError) as http_exc:  # slack_sdk's raw urlopen
        client.files_upload_v2(channel="C1", content=b"x", filename="a.txt")
    assert http_exc.value.code == 500
    (failed,) = slack.calls_to(UPLOAD_METHOD, include_failed=True)
    assert failed.status == 500
    assert slack.calls_to("files.completeUploadExternal", include_failed=True) == []
    assert slack.files == {}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"length": "3"}, "invalid_arguments"),
        ({"filename": "a.txt"}, "invalid_arguments"),
        ({"filename": "a.txt", "length": "three"}, "invalid_arguments"),
        ({"filename": "a.txt", "length": "1.5"}, "invalid_arguments"),
        ({"filename": "a.txt", "length": "-3"}, "invalid_arguments"),
        ({"filename": "a.txt", "length": "0"}, "missing_argument"),
        ({"filename": "a.png", "length": "3", "alt_txt": "x" * 1001}, "alt_txt_too_large"),
        (
            {"filename": "a.py", "length": str(2 * 1024 * 1024), "snippet_type": "python"},
            "snippet_too_large",
        ),
    ],
)
def test_get_upload_url_external_rejections(
    client: WebClient, slack: FakeSlack, data: dict[str, str], error: str
) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("files.getUploadURLExternal", data=data)
    assert api_error(exc) == error


def test_get_upload_url_external_names_missing_fields(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("files.getUploadURLExternal", data={})
    assert exc.value.response["response_metadata"]["messages"] == [
        "[ERROR] missing required field: filename",
        "[ERROR] missing required field: length",
    ]


def test_upload_url_answers_like_slack(client: WebClient, slack: FakeSlack) -> None:
    file_id, url = upload_url(client, length=len(PNG))
    other_id, other_url = upload_url(client, length=3)
    assert url.startswith(f"http://127.0.0.1:{slack.port}/upload/v1/") and file_id != other_id
    assert url != other_url
    assert post_bytes(url, PNG) == (200, "text/plain; charset=utf-8", f"OK - {len(PNG)}")
    assert post_bytes(url, PNG)[0] == 404  # used
    assert post_bytes(url + "x", PNG)[0] == 404  # unknown
    (used, unknown) = slack.calls_to(UPLOAD_METHOD, include_failed=True)[1:]
    assert (used.error, unknown.error) == ("not_found", "not_found")
    # Slack also takes a multipart form on the upload URL
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="filename"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nabc\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert post_bytes(other_url, body, headers)[:2] == (200, "text/plain; charset=utf-8")
    client.files_completeUploadExternal(files=[{"id": other_id}])
    assert slack.files[other_id]["content"] == b"abc"


def test_complete_upload_external_rejections(client: WebClient, slack: FakeSlack) -> None:
    def complete_error(**kwargs: Any) -> str:
        with pytest.raises(SlackApiError) as exc:
            client.files_completeUploadExternal(**kwargs)
        return api_error(exc)

    file_id, url = upload_url(client, length=3)
    assert complete_error(files=[{"id": file_id}]) == "file_not_found"  # nothing uploaded yet
    assert complete_error(files=[{"id": "F404"}]) == "file_not_found"
    post_bytes(url, b"abc")
    assert complete_error(files=[{"id": file_id}], channel_id="C404") == "channel_not_found"
    assert complete_error(files=[{"id": file_id}], channel_id="C2") == "not_in_channel"
    assert complete_error(files=[{"id": file_id}], channels=["C1", "U404"]) == "channel_not_found"
    assert complete_error(files=[]) == "invalid_arguments"
    assert complete_error(files=[{"title": "no id"}]) == "invalid_arguments"
    with pytest.raises(SlackApiError) as exc:
        client.api_call("files.completeUploadExternal", data={"files": "[not json"})
    assert api_error(exc) == "invalid_arguments"
    assert slack.files == {} and slack.messages["C1"] == {}
    # failed completions left the ticket usable; it completes once
    assert client.files_completeUploadExternal(files=[{"id": file_id}], channel_id="C1")["ok"]
    assert complete_error(files=[{"id": file_id}], channel_id="C1") == "file_not_found"
    assert len(slack.messages["C1"]) == 1


def test_complete_upload_external_length_mismatch(client: WebClient, slack: FakeSlack) -> None:
    file_id, url = upload_url(client, length=10)
    assert post_bytes(url, b"abc") == (200, "text/plain; charset=utf-8", "OK - 3")
    with pytest.raises(SlackApiError) as exc:
        client.files_completeUploadExternal(files=[{"id": file_id}], channel_id="C1")
    assert api_error(exc) == "file_not_found"
    assert slack.files == {}


def test_complete_upload_external_without_channel_is_private(
    client: WebClient, slack: FakeSlack
) -> None:
    resp = client.files_upload_v2(content="notes", filename="notes.txt", initial_comment="x")
    assert resp["file"]["channels"] == [] and resp["file"]["shares"] == {}
    assert resp["file"]["title"] == "notes.txt"  # slack_sdk's default title
    stored = slack.files[resp["file"]["id"]]
    assert stored["channels"] == [] and stored["content"] == b"notes"
    assert all(not m for m in slack.messages.values())


def test_complete_upload_external_json_body_in_thread(client: WebClient, slack: FakeSlack) -> None:
    parent = slack.add_message("C1", "send me the chart", user="U1")
    file_id, url = upload_url(client, "chart.png", length=len(PNG))
    post_bytes(url, PNG)
    resp = client.api_call(
        "files.completeUploadExternal",
        json={
            "files": [{"id": file_id, "title": "Chart"}],
            "channel_id": "C1",
            "thread_ts": parent,
            "initial_comment": "here",
        },
    )
    assert resp["files"][0]["shares"]["public"]["C1"][0]["thread_ts"] == parent
    messages = slack.messages["C1"]
    (reply,) = (m for m in messages.values() if m.get("files"))
    assert reply["thread_ts"] == parent and reply["text"] == "here"
    assert messages[parent]["reply_count"] == 1


def test_files_upload_v2_several_files_and_channels(client: WebClient, slack: FakeSlack) -> None:
    resp = client.files_upload_v2(
        file_uploads=[
            {"content": b"a,b\n1,2\n", "filename": "data.csv", "title": "Data"},
            {"content": PNG, "filename": "chart.png"},
        ],
        channels=["C1", "U1"],  # a user id shares in the bot's DM with that user
        initial_comment="weekly",
    )
    dm = slack.dm_channel_id("U1")
    ids = [f["id"] for f in resp["files"]]
    assert len(set(ids)) == 2 and "file" not in resp.data
    for f in resp["files"]:
        assert (f["channels"], f["ims"]) == (["C1"], [dm])
    for channel in ("C1", dm):
        (message,) = slack.messages[channel].values()  # one message with both files
        assert [f["id"] for f in message["files"]] == ids and message["text"] == "weekly"
    assert slack.files[ids[0]]["channels"] == ["C1", dm]
    assert slack.files[ids[0]]["mimetype"] == "text/csv"


def test_chat_get_permalink(client: WebClient, slack: FakeSlack) -> None:
    ts = client.chat_postMessage(channel="C1", text="x")["ts"]
    resp = client.chat_getPermalink(channel="C1", message_ts=ts)
    assert resp.data == {
        "ok": True,
        "channel": "C1",
        "permalink": f"https://fake.slack.com/archives/C1/p{ts.replace('.', '')}",
    }
    reply = client.chat_postMessage(channel="C1", text="r", thread_ts=ts)["ts"]
    link = client.chat_getPermalink(channel="C1", message_ts=reply)["permalink"]
    assert link == (
        f"https://fake.slack.com/archives/C1/p{reply.replace('.', '')}?thread_ts={ts}&cid=C1"
    )
    for kwargs, error in (
        ({"channel": "C1", "message_ts": "1.000001"}, "message_not_found"),
        ({"channel": "C404", "message_ts": ts}, "channel_not_found"),
        ({"channel": "C2", "message_ts": ts}, "message_not_found"),
    ):
        with pytest.raises(SlackApiError) as exc:
            client.chat_getPermalink(**kwargs)
        assert api_error(exc) == error
    slack.fail_next("chat.getPermalink", status=503)
    with pytest.raises(SlackApiError) as exc:
        client.chat_getPermalink(channel="C1", message_ts=ts)
    assert exc.value.response.status_code == 503


# ----------------------------------------------------------------------------- fault injection


def test_rate_limit_honoured_by_retry_handler(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", error="ratelimited", retry_after=1)
    client = WebClient(
        token=TOKEN,
        base_url=slack.url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    started = time.monotonic()
    assert client.chat_postMessage(channel="C1", text="hi")["ok"] is True
    assert time.monotonic() - started >= 1.0  # waited for Retry-After
    first, second = slack.calls_to("chat.postMessage", include_failed=True)
    assert (first.status, first.response) == (429, {"ok": False, "error": "ratelimited"})
    assert second.ok and second.status == 200
    assert len(slack.messages["C1"]) == 1


def test_rate_limit_without_retry_surfaces_429(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", error="ratelimited", retry_after=1)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="hi")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "1"
    assert api_error(exc) == "ratelimited"


def test_server_error_retried(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", status=500)
    client = WebClient(
        token=TOKEN,
        base_url=slack.url,
        retry_handlers=[ServerErrorRetryHandler(interval_calculator=QUICK)],
    )
    assert client.chat_postMessage(channel="C1", text="hi")["ok"] is True
    statuses = [c.status for c in slack.calls_to("chat.postMessage", include_failed=True)]
    assert statuses == [500, 200]


def test_server_error_without_retry(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="hi")
    assert exc.value.response.status_code == 503
    assert api_error(exc) == "service_unavailable"


def test_error_fault_is_http_200(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("users.info", error="user_not_found")
    with pytest.raises(SlackApiError) as exc:
        client.users_info(user="U1")
    assert exc.value.response.status_code == 200 and api_error(exc) == "user_not_found"
    assert client.users_info(user="U1")["ok"] is True  # the fault was used up


def test_fault_times(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("users.info", error="fatal_error", times=3)
    for _ in range(3):
        with pytest.raises(SlackApiError):
            client.users_info(user="U1")
    assert client.users_info(user="U1")["ok"]
    assert [c.ok for c in slack.calls_to("users.info", include_failed=True)] == [
        False,
        False,
        False,
        True,
    ]


def test_dropped_connection_surfaces_as_error(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", drop=True)
    with pytest.raises((RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        client.chat_postMessage(channel="C1", text="hi")
    (call,) = slack.calls_to("chat.postMessage", include_failed=True)
    assert call.response is None and call.status == 0
    assert slack.messages["C1"] == {}


def test_dropped_connection_retried(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", drop=True)
    client = WebClient(
        token=TOKEN,
        base_url=slack.url,
        retry_handlers=[ConnectionErrorRetryHandler(interval_calculator=QUICK)],
    )
    assert client.chat_postMessage(channel="C1", text="hi")["ok"] is True
    assert [c.status for c in slack.calls_to("chat.postMessage", include_failed=True)] == [0, 200]


def test_delay_past_client_timeout(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", delay=3.0)
    client = WebClient(token=TOKEN, base_url=slack.url, timeout=1, retry_handlers=[])
    started = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        client.chat_postMessage(channel="C1", text="slow")
    assert time.monotonic() - started < 2.5


def test_delay_then_normal_answer(client: WebClient, slack: FakeSlack) -> None:
    slack.fail_next("auth.test", delay=0.2)
    started = time.monotonic()
    assert client.auth_test()["ok"] is True
    assert time.monotonic() - started >= 0.2


def test_fail_next_needs_a_fault(slack: FakeSlack) -> None:
    with pytest.raises(ValueError):
        slack.fail_next("auth.test")


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def test_set_latency_slows_every_call_and_calls_overlap(slack: FakeSlack) -> None:
    slack.set_latency(0.5)
    durations: list[float] = []

    def call() -> None:
        client = WebClient(token=TOKEN, base_url=slack.url, retry_handlers=[])
        durations.append(timed(lambda: client.chat_postMessage(channel="C1", text="slow")))

    threads = [threading.Thread(target=call) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(0.15)
    # Mid-wait: nothing was handled yet, and the fake's lock is free.
    assert timed(lambda: slack.add_user("U9")) < 0.2
    assert slack.messages["C1"] == {} and slack.calls == []
    for thread in threads:
        thread.join(timeout=5)
    assert len(durations) == 4 and min(durations) >= 0.49
    assert time.monotonic() - started < 1.5  # overlapped, not 4 x 0.5 s one after another
    assert len(slack.messages["C1"]) == 4
    client = WebClient(token=TOKEN, base_url=slack.url, retry_handlers=[])
    # errors are answered slowly too
    started = time.monotonic()
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C999", text="x")
    assert time.monotonic() - started >= 0.49
    slack.set_latency(0)
    assert timed(client.auth_test) < 0.3


def test_set_latency_for_some_methods(client: WebClient, slack: FakeSlack) -> None:
    slack.set_latency(0.3, methods=["users.info"])
    assert timed(lambda: client.users_info(user="U1")) >= 0.29
    assert timed(client.auth_test) < 0.25
    slack.set_latency(0.3, "auth.test")  # a lone name; replaces the previous setting
    assert timed(client.auth_test) >= 0.29
    assert timed(lambda: client.users_info(user="U1")) < 0.25
    slack.clear_faults()
    assert timed(client.auth_test) < 0.25
    with pytest.raises(ValueError):
        slack.set_latency(-1)


def test_set_latency_adds_to_faults_but_not_to_drops(client: WebClient, slack: FakeSlack) -> None:
    slack.set_latency(0.3)
    slack.fail_next("auth.test", delay=0.2)
    assert timed(client.auth_test) >= 0.49
    slack.fail_next("auth.test", error="ratelimited")
    started = time.monotonic()
    with pytest.raises(SlackApiError):
        client.auth_test()
    assert time.monotonic() - started >= 0.29
    slack.fail_next("auth.test", drop=True)
    started = time.monotonic()
    with pytest.raises((RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        client.auth_test()
    assert time.monotonic() - started < 0.25


def test_set_latency_spares_uploads_and_response_urls(client: WebClient, slack: FakeSlack) -> None:
    file_id, url = upload_url(client)
    other_id, other_url = upload_url(client)
    response_url = slack.new_response_url()
    json_headers = {"Content-Type": "application/json"}
    slack.set_latency(0.5)
    assert timed(lambda: post_bytes(url, b"abc")) < 0.4
    assert timed(lambda: post_bytes(response_url, b'{"text": "hi"}', json_headers)) < 0.4
    # named explicitly, they wait too
    slack.set_latency(0.3, methods=[UPLOAD_METHOD, RESPONSE_URL_METHOD])
    assert timed(lambda: post_bytes(other_url, b"abc")) >= 0.29
    assert timed(lambda: post_bytes(response_url, b'{"text": "hi"}', json_headers)) >= 0.29
    assert [c.status for c in slack.calls_to(UPLOAD_METHOD)] == [200, 200]
    assert [c.status for c in slack.calls_to(RESPONSE_URL_METHOD)] == [200, 200]


def test_stop_cuts_a_latency_wait_short() -> None:
    slack = FakeSlack(bot_token=TOKEN).start()
    slack.set_latency(30)
    errors: list[BaseException] = []

    def call() -> None:
        client = WebClient(token=TOKEN, base_url=slack.url, timeout=10, retry_handlers=[])
        try:
            client.auth_test()
        except Exception as exc:  # whatever the dropped connection raises
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    slack.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 3
    assert len(errors) == 1


# ----------------------------------------------------------------------------- robustness & helpers


def test_exception_in_handler_answers_500_and_server_survives(
    client: WebClient, slack: FakeSlack
) -> None:
    def broken(params: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("boom")

    slack.register("broken.method", broken)
    with pytest.raises(SlackApiError) as exc:
        client.api_call("broken.method")
    assert exc.value.response.status_code == 500
    assert api_error(exc) == "fatal_error"
    assert "KeyError" in slack.server_errors[0]
    (call,) = slack.calls_to("broken.method", include_failed=True)
    assert call.status == 500
    assert client.auth_test()["ok"] is True


def test_register_custom_method(client: WebClient, slack: FakeSlack) -> None:
    def upload_url(params: dict[str, Any]) -> dict[str, Any]:
        if "filename" not in params:
            raise SlackError("invalid_arguments")
        return {"upload_url": "http://127.0.0.1/upload", "file_id": "F1"}

    # replaces the built-in method
    slack.register("files.getUploadURLExternal", upload_url, accepts_json=False)
    resp = client.files_getUploadURLExternal(filename="a.txt", length=3)
    assert resp["file_id"] == "F1"
    slack.register("files.info", lambda params: {"file": {"id": params["file"]}})
    slack.granted |= {"files:read"}  # files.info's scope; Closeloop's manifest lacks it
    assert client.api_call("files.info", params={"file": "F9"})["file"] == {"id": "F9"}


def test_wait_for(slack: FakeSlack) -> None:
    def later() -> None:
        time.sleep(0.2)
        WebClient(token=TOKEN, base_url=slack.url).chat_postMessage(channel="C1", text="late")

    threading.Thread(target=later).start()
    (call,) = slack.wait_for("chat.postMessage", timeout=5)
    assert isinstance(call, Call) and call.params["text"] == "late"


def test_wait_for_timeout_lists_calls(client: WebClient, slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C999", text="x")
    with pytest.raises(AssertionError, match=r"chat\.postMessage->channel_not_found"):
        slack.wait_for("chat.postMessage", timeout=0.2)


def test_reset_keeps_state(client: WebClient, slack: FakeSlack) -> None:
    ts = client.chat_postMessage(channel="C1", text="x")["ts"]
    slack.reset()
    assert slack.calls == []
    assert ts in slack.messages["C1"]
    assert client.users_info(user="U1")["ok"]


def test_state_snapshots_are_copies(client: WebClient, slack: FakeSlack) -> None:
    ts = client.chat_postMessage(channel="C1", text="x")["ts"]
    slack.messages["C1"][ts]["text"] = "mutated"
    assert slack.messages["C1"][ts]["text"] == "x"

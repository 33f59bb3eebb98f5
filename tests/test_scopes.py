"""The scopes: manifest.yml asks for exactly what the code uses, the method -> scope table
agrees with Slack's spec, and the fake Slack refuses what real Slack refuses."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Digest, OutboxMessage
from bot.slack import scopes
from tests.conftest import BOT_TOKEN
from tests.fakeslack import FakeSlack, manifest_scopes
from tests.harness import tick
from tests.test_digest import NOV_2_0900_NEW_YORK, build_posting_data, digest_posts

ROOT = Path(__file__).resolve().parents[1]
SPEC = json.loads(
    (ROOT / "tests/slack_samples/web_api_method_scopes.openapi_2020.json").read_text()
)
# The 2020 spec's names for what a bot token's granular scopes are called today.
RENAMED = {"chat:write:bot": "chat:write", "files:write:user": "files:write"}


def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def _api_methods_of(name: str, seen: set[str]) -> set[str]:
    """The Web API methods a WebClient method calls (files_upload_v2 calls two)."""
    if name in seen:
        return set()
    seen.add(name)
    source = inspect.getsource(getattr(WebClient, name))
    found = set(re.findall(r'api_call\(\s*"([a-zA-Z.]+)"', source))
    for other in set(re.findall(r"self\.([a-z][A-Za-z_]+)\(", source)):
        if other != name and other != "api_call" and callable(getattr(WebClient, other, None)):
            found |= _api_methods_of(other, seen)
    return found


def web_api_calls_in_bot() -> set[str]:
    """Every Web API method the code in bot/ calls through a WebClient method (an attribute
    of anything named like one: a false match can only add a method, and the tests below
    then ask for its scope)."""
    names: set[str] = set()
    for path in (ROOT / "bot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):  # called, or handed on (_pages(client.x))
                names.add(node.attr)
    methods: set[str] = set()
    for name in names:
        if not name.startswith("_") and callable(getattr(WebClient, name, None)):
            methods |= _api_methods_of(name, set())
    return methods


def test_the_code_calls_exactly_the_methods_listed_as_used():
    called = web_api_calls_in_bot()
    assert "files.getUploadURLExternal" in called and "conversations.info" in called
    assert called == set(scopes.METHODS_USED)


def test_the_manifest_asks_for_exactly_the_scopes_the_code_needs():
    needed = scopes.needed_scopes({m: scopes.METHODS_USED[m] for m in web_api_calls_in_bot()})
    assert needed == scopes.NEEDED
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == needed
    assert manifest_scopes() == needed  # what the fake Slack grants


def test_event_and_command_scopes_are_those_of_the_manifests_events():
    m = manifest()
    events = set(m["settings"]["event_subscriptions"]["bot_events"])
    assert events == {e for e in scopes.EVENT_SCOPES if "." in e or "_" in e} | set(
        scopes.EVENTS_WITHOUT_SCOPE
    )
    assert m["features"]["slash_commands"] and "commands" in scopes.EVENT_SCOPES.values()


def test_the_scope_table_agrees_with_slacks_spec():
    for method, accepted in scopes.METHOD_SCOPES.items():
        if method not in SPEC:  # newer than the 2020 spec: from Slack's method pages
            assert method in ("files.getUploadURLExternal", "files.completeUploadExternal")
            assert accepted == ("files:write",)
            continue
        from_spec = [RENAMED.get(s, s) for s in SPEC[method] if s != "none"]
        if method.startswith("chat."):  # the spec lists the user scope too
            from_spec = [s for s in from_spec if s != "chat:write:user"]
        assert tuple(dict.fromkeys(from_spec)) == accepted, method


# --- the fake Slack refuses a call without its scope ----------------------------------------


@pytest.fixture
def no_files_write(tmp_path):
    m = manifest()
    m["oauth_config"]["scopes"]["bot"].remove("files:write")
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump(m))
    with FakeSlack(bot_token=BOT_TOKEN, manifest=path) as slack:
        slack.add_channel("CPUB", name="public")
        slack.add_channel("CPRIV", name="private", is_private=True)
        yield slack


def test_a_call_without_its_scope_is_refused_as_slack_does(no_files_write):
    slack = no_files_write
    client = WebClient(token=BOT_TOKEN, base_url=slack.url, retry_handlers=[])
    with pytest.raises(SlackApiError) as refused:
        client.files_getUploadURLExternal(filename="chart.png", length=3)
    response = refused.value.response
    assert response.status_code == 200
    granted = set(manifest()["oauth_config"]["scopes"]["bot"]) - {"files:write"}
    assert response.data == {
        "ok": False,
        "error": "missing_scope",
        "needed": "files:write",
        "provided": ",".join(sorted(granted)),
    }
    ok = client.auth_test()
    assert set(ok.headers["x-oauth-scopes"].split(",")) == granted
    assert slack.calls_to("files.getUploadURLExternal", include_failed=True)[0].error == (
        "missing_scope"
    )


def test_one_scope_of_several_the_one_for_the_channel_type(no_files_write):
    slack = no_files_write
    slack.granted = frozenset({"channels:read"})
    client = WebClient(token=BOT_TOKEN, base_url=slack.url, retry_handlers=[])
    assert client.conversations_info(channel="CPUB")["channel"]["is_member"] is True
    with pytest.raises(SlackApiError) as refused:
        client.conversations_info(channel="CPRIV")
    assert refused.value.response["needed"] == "groups:read"
    with pytest.raises(SlackApiError) as unknown:  # any one scope lets Slack say so
        client.conversations_info(channel="CNONE")
    assert unknown.value.response["error"] == "channel_not_found"
    slack.granted = frozenset({"users:read"})
    with pytest.raises(SlackApiError) as none:
        client.conversations_info(channel="CNONE")
    assert none.value.response["error"] == "missing_scope"
    assert none.value.response["needed"] == "channels:read"
    assert none.value.response["provided"] == "users:read"
    with pytest.raises(SlackApiError) as dm:
        client.conversations_open(users="U1")
    assert dm.value.response["needed"] == "im:write"


# --- the digest, when its chart is refused ---------------------------------------------


def test_a_chart_refused_for_a_scope_is_recorded_and_not_promised(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    slack.granted = slack.granted - {"files:write"}  # an app installed from the old manifest
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)
    (post,) = digest_posts(slack)
    assert "the chart is in the thread" in json.dumps(post.params)
    clock.advance(minutes=1)
    tick(h.rt)
    (refused,) = slack.calls_to("files.getUploadURLExternal", include_failed=True)
    assert refused.response["error"] == "missing_scope"
    assert slack.files == {}
    (edit,) = [c for c in slack.calls_to("chat.update") if c.params["ts"] == post.response["ts"]]
    text = json.dumps(edit.params)
    assert "the chart is in the thread" not in text
    assert "the chart could not be uploaded: Slack refused it (missing_scope files:write)" in text
    with session_scope(h.rt.session_factory) as s:
        chart = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "digest_chart")).one()
        assert chart.state == "failed"
        assert chart.last_error == "HTTP 200 missing_scope files:write"
        assert s.scalars(select(Digest.chart_file_id)).one() is None
    for _ in range(3):  # not tried again: it cannot work until the app is reinstalled
        clock.advance(minutes=11)
        tick(h.rt)
    assert len(slack.calls_to("files.getUploadURLExternal", include_failed=True)) == 1

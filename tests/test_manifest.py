import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "tests/slack_samples/manifest.schema.1.0.0.json").read_text())


def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_manifest_is_valid_against_slacks_schema():
    jsonschema.validate(manifest(), SCHEMA)


def test_manifest_covers_what_the_app_uses():
    m = manifest()
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert {
        "chat:write",
        "im:history",
        "commands",
        "reactions:read",
        "users:read",
        "usergroups:read",
    } <= scopes
    assert {"message.im", "reaction_added"} <= set(
        m["settings"]["event_subscriptions"]["bot_events"]
    )
    assert m["settings"]["socket_mode_enabled"] is True
    assert m["settings"]["interactivity"]["is_enabled"] is True
    commands = [c["command"] for c in m["features"]["slash_commands"]]
    assert commands == ["/closeloop", "/winloss", "/lead"]


def test_invalid_manifest_is_rejected_by_the_schema():
    broken = manifest()
    broken["settings"]["event_subscriptions"]["bot_events"] = "message.im"
    try:
        jsonschema.validate(broken, SCHEMA)
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema accepted a broken manifest")

""".env.example, read as a new user reads it: the active lines are exactly what must be filled
in, every one a setting Closeloop knows, none in conflict with another; the commented lines are
settings Closeloop reads too; and the Socket Mode / HTTP switch it describes works."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
LINE = re.compile(r"^(#)?([A-Z][A-Z0-9_]*)=(.*)$")

# A valid value for each setting a new user must fill in (the file leaves them empty).
SAMPLES = {
    "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
    "SLACK_APP_TOKEN": "xapp-1-A1-abc",
    "SLACK_SIGNING_SECRET": "0123456789abcdef",
    "FEEDBACK_CHANNEL": "C0123456789",
    "SALES_USERGROUP": "S0123456789",
    "SALES_USERS": "U0123456789,U0987654321",
    "MARKETING_USERGROUP": "S0987654321",
    "MARKETING_USERS": "U0A1B2C3D4E",
}


def parse() -> tuple[dict[str, str], dict[str, str]]:
    """(active, commented) settings of .env.example, each KEY -> value."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for raw in EXAMPLE.read_text().splitlines():
        match = LINE.match(raw.strip())
        if not match:
            continue
        into = commented if match[1] else active
        assert match[2] not in active and match[2] not in commented, f"{match[2]} twice"
        into[match[2]] = match[3]
    return active, commented


class Recording(Mapping[str, str]):
    """An environment that remembers every name Settings.from_env asks for."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.env[key]

    def get(self, key: str, default=None):  # type: ignore[override]
        self.asked.add(key)
        return self.env.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def filled(keys) -> dict[str, str]:
    keys = list(keys)
    missing = [k for k in keys if k not in SAMPLES]
    assert not missing, f"add a valid sample value for {missing} to SAMPLES"
    return {k: SAMPLES[k] for k in keys}


def test_every_active_key_is_a_setting_closeloop_reads():
    active, _ = parse()
    env = Recording(filled(active))
    Settings.from_env(env)
    assert set(active) <= env.asked, set(active) - env.asked


def test_the_active_keys_are_all_the_required_settings_and_only_those():
    active, _ = parse()
    # filled in, they are enough: nothing required is missing, and none conflicts with
    # another (Settings refuses SALES_USERS beside SALES_USERGROUP, for example)
    settings = Settings.from_env(filled(active))
    assert settings.socket_mode  # manifest.yml's default
    # and each is needed: without it Closeloop refuses to start, naming it
    for key in active:
        without = filled(k for k in active if k != key)
        with pytest.raises(ConfigError) as err:
            Settings.from_env(without)
        assert key in str(err.value), (key, str(err.value))


def test_no_two_alternatives_are_both_active_and_the_other_is_offered_commented():
    active, commented = parse()
    for team in ("SALES", "MARKETING"):
        pair = {f"{team}_USERS", f"{team}_USERGROUP"}
        assert len(pair & set(active)) == 1, pair
        assert len(pair & set(commented)) == 1, pair
        # the commented one works in place of the active one
        (on,), (off,) = pair & set(active), pair & set(commented)
        swapped = filled([k for k in active if k != on] + [off])
        Settings.from_env(swapped)
        with pytest.raises(ConfigError, match="not both"):
            Settings.from_env({**swapped, on: SAMPLES[on]})


def test_http_mode_as_the_file_says_delete_the_app_token_and_fill_in_the_signing_secret():
    active, commented = parse()
    assert "SLACK_APP_TOKEN" in active and "SLACK_SIGNING_SECRET" in commented
    text = EXAMPLE.read_text()
    assert "Socket Mode or HTTP? SLACK_APP_TOKEN decides" in text
    http = filled([k for k in active if k != "SLACK_APP_TOKEN"] + ["SLACK_SIGNING_SECRET"])
    assert not Settings.from_env(http).socket_mode
    # left empty rather than deleted, the app token means HTTP too
    assert not Settings.from_env({**http, "SLACK_APP_TOKEN": ""}).socket_mode
    # and forgetting the secret is one line naming it
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET is not set"):
        Settings.from_env(filled([k for k in active if k != "SLACK_APP_TOKEN"]))


def test_every_commented_key_is_read_by_closeloop():
    """A commented line is a setting the code reads (from Settings or the environment)."""
    _, commented = parse()
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    unknown = [k for k in commented if f'"{k}"' not in source]
    assert not unknown, unknown
    assert "OUTBOX_LEASE_SECONDS" in commented  # an advanced setting, never active


def test_copied_unfilled_it_refuses_to_start_naming_a_missing_setting():
    active, _ = parse()
    assert all(value == "" for value in active.values()), "leave what must be filled empty"
    with pytest.raises(ConfigError, match="is not set"):
        Settings.from_env(active)

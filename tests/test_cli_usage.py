"""The `closeloop` command as a newcomer first meets it: a `.env` copied from `.env.example`,
`--version`, `--help`, the commands that need only a database, and usage mistakes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot.__main__ import _parser
from tests.conftest import closeloop
from tests.test_import_export import HEADER

ROOT = Path(__file__).resolve().parent.parent


def _bare_env(tmp_path, **settings):
    """An environment with nothing of Closeloop's but ``settings`` and an absent .env."""
    return {"PATH": "/usr/bin:/bin", "CLOSELOOP_ENV_FILE": str(tmp_path / "absent.env"), **settings}


def test_env_copied_from_example_and_left_empty_names_every_missing_setting(tmp_path):
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    env = {**_bare_env(tmp_path), "CLOSELOOP_ENV_FILE": str(tmp_path / ".env")}
    out = closeloop(env, "run")
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert all(line.startswith("closeloop: ") for line in lines), out.stderr
    assert "Traceback" not in out.stderr
    named = {re.match(r"closeloop: (\S+)", line)[1] for line in lines}  # type: ignore[index]
    assert named == {
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",  # SLACK_APP_TOKEN left empty: HTTP mode
        "FEEDBACK_CHANNEL",
        "SALES_USERS",
        "MARKETING_USERS",
    }
    assert len(lines) == len(named)  # one line each, nothing else
    assert all("is not set" in line for line in lines)


def test_version(tmp_path):
    out = closeloop(_bare_env(tmp_path), "--version")
    assert out.returncode == 0
    assert re.fullmatch(r"closeloop \d+\.\d+\.\d+\n", out.stdout), out.stdout


def _commands():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", _commands())
def test_every_command_help_has_an_example(command, tmp_path):
    out = closeloop(_bare_env(tmp_path), command, "--help")
    assert out.returncode == 0, out.stderr
    examples = out.stdout.split("examples:\n", 1)
    assert len(examples) == 2, out.stdout
    assert re.search(rf"^\s+closeloop {command}\b", examples[1], re.M) or (
        command == "migrate" and "closeloop migrate" in examples[1]
    )


def test_database_only_commands_run_with_nothing_but_database_url(tmp_path):
    env = _bare_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    csv = tmp_path / "log.csv"
    csv.write_text(
        f"{HEADER}\n"
        'D1,Acme,lost,2026-11-03,2026-11-03T18:00:00Z,"Too pricey for us, honestly.",Price,,,,'
        ",UANA\n"
    )
    for args in (
        ("migrate",),
        ("import", "winloss", str(csv)),
        ("export", "winloss"),
        ("export", "feedback"),
        ("digest", "--month", "2026-11"),
        ("digest", "--json"),
        ("competitors", "list"),
    ):
        out = closeloop(env, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert "SLACK" not in out.stderr, (args, out.stderr)
    assert "Acme" in closeloop(env, "export", "winloss").stdout
    # Posting needs Slack: the settings it lacks are named, one line each.
    post = closeloop(env, "digest", "--post")
    assert post.returncode == 2 and "SLACK_BOT_TOKEN is not set" in post.stderr


def test_prompt_for_a_name_instead_of_an_id_is_one_line(cli_env, fake_slack):
    out = closeloop(cli_env, "prompt", "--now", "--user", "ana")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert "'ana' is not a Slack user ID" in out.stderr
    assert fake_slack.calls_to("chat.postMessage") == []


def test_usage_mistakes_are_one_line(tmp_path):
    for args in (("frobnicate",), ("export", "winloss", "--since", "yesterday"), ()):
        out = closeloop(_bare_env(tmp_path), *args)
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("closeloop: "), out.stderr


def test_competitors_rename_keeps_the_old_spelling_as_an_alias(tmp_path):
    env = _bare_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    csv = tmp_path / "log.csv"
    csv.write_text(
        f"{HEADER}\n"
        "D1,Acme,lost,2026-11-03,2026-11-03T18:00:00Z,They were cheaper.,Price,Rivl Inc,,,,UANA\n"
        "D2,Bolt,lost,2026-11-04,2026-11-04T18:00:00Z,Cheaper again.,Price,Other Co,,,,UANA\n"
    )
    assert closeloop(env, "import", "winloss", str(csv)).returncode == 0, "import"
    out = closeloop(env, "competitors", "rename", "rivl inc", "Rival Inc")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "renamed 'Rivl Inc' to 'Rival Inc'\n"
    listed = closeloop(env, "competitors", "list").stdout.splitlines()
    assert sorted(listed) == ["Other Co", "Rival Inc"]
    assert "Rival Inc" in closeloop(env, "export", "winloss").stdout
    # The old spelling still finds it (a rep typing it again lands on the same one) ...
    again = closeloop(env, "competitors", "rename", "Rivl Inc", "Rival, Inc.")
    assert again.returncode == 0 and "to 'Rival, Inc.'" in again.stdout
    # ... and a name another competitor has is a merge, not a rename.
    taken = closeloop(env, "competitors", "rename", "Rival, Inc.", "other co")
    assert taken.returncode == 1 and "merge" in taken.stderr
    missing = closeloop(env, "competitors", "rename", "Nobody", "Somebody")
    assert missing.returncode == 1 and "No competitor called 'Nobody'" in missing.stderr

"""``closeloop definition set | show | history`` as an operator runs them, against the fake
Slack (both databases)."""

from __future__ import annotations

from tests.conftest import closeloop

FILE = """# Qualified lead

A company of 50+ people that we can help, with someone who can buy.

## MQL
Fits the ICP and requested a demo.

## Hand-off rules
Marketing passes it with the campaign & what the person asked <!here>.
"""


def posts_in(slack, channel):
    return [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == channel]


def test_set_from_a_file_then_show_and_history(cli_env, fake_slack, tmp_path):
    fake_slack.add_channel("CSALES", name="sales")
    env = {**cli_env, "LEAD_SALES_CHANNEL": "CSALES"}
    path = tmp_path / "definition.md"
    path.write_text(FILE)

    out = closeloop(env, "definition", "set", str(path), "--note", "Agreed at the offsite")
    assert out.returncode == 0, out.stderr
    assert "saved version 1" in out.stdout and "told CSALES, CMKTG" in out.stdout
    for channel in ("CSALES", "CMKTG"):
        (post,) = posts_in(fake_slack, channel)
        assert "version 1" in post.params["text"] and "Agreed at the offsite" in post.params["text"]
        assert "the operator" in str(post.params["blocks"])

    # The same file again: refused, nothing sent.
    again = closeloop(env, "definition", "set", str(path))
    assert again.returncode == 1 and "Nothing changed" in again.stderr
    assert len(posts_in(fake_slack, "CMKTG")) == 1

    # Edited, with an author and the default note.
    path.write_text(FILE.replace("50+", "100+"))
    out = closeloop(env, "definition", "set", str(path), "--author", "UMIA")
    assert out.returncode == 0, out.stderr
    assert "saved version 2" in out.stdout
    assert "Loaded from definition.md" in posts_in(fake_slack, "CSALES")[-1].params["text"]

    # show and history need only DATABASE_URL.
    db_only = {k: cli_env[k] for k in ("PATH", "CLOSELOOP_ENV_FILE", "DATABASE_URL")}
    shown = closeloop(db_only, "definition", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# Qualified lead (version 2)\n")
    assert "## Hand-off rules\n\nMarketing passes it with the campaign & what" in shown.stdout
    first = closeloop(db_only, "definition", "show", "--version", "1")
    assert "50+ people" in first.stdout and "100+" not in first.stdout
    history = closeloop(db_only, "definition", "history")
    lines = history.stdout.splitlines()
    assert lines[0].startswith("version 2 ") and "UMIA" in lines[0]
    assert lines[1].startswith("version 1 ") and "operator  Agreed at the offsite" in lines[1]
    missing = closeloop(db_only, "definition", "show", "--version", "9")
    assert missing.returncode == 1 and "no version 9" in missing.stderr

    # What show printed reads back as the same definition: nothing changed.
    path.write_text(shown.stdout)
    same = closeloop(env, "definition", "set", str(path))
    assert same.returncode == 1 and "Nothing changed: this is version 2" in same.stderr


def test_set_refuses_a_file_it_cannot_read_as_a_definition(cli_env, fake_slack, tmp_path):
    path = tmp_path / "bad.md"
    path.write_text("# Qualified lead\nSummary\n## Budget\nyes\n")
    out = closeloop(cli_env, "definition", "set", str(path))
    assert out.returncode == 1
    assert "line 3: unknown section 'Budget'" in out.stderr and "## Disqualifiers" in out.stderr
    assert out.stderr.count("\n") == 1
    gone = closeloop(cli_env, "definition", "set", str(tmp_path / "absent.md"))
    assert gone.returncode == 2 and "cannot read" in gone.stderr
    bad_author = closeloop(cli_env, "definition", "set", str(path), "--author", "ana")
    assert bad_author.returncode == 2 and "not a Slack user ID" in bad_author.stderr
    assert fake_slack.calls_to("chat.postMessage") == []


def test_show_before_any_definition_prints_a_template(cli_env):
    out = closeloop(cli_env, "definition", "show")
    assert out.returncode == 0
    assert "no definition yet" in out.stderr
    assert "## Marketing-qualified lead (MQL)" in out.stdout and "## Hand-off rules" in out.stdout

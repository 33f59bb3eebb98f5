"""The lock files install what pyproject.toml asks for: every dependency pinned to one version
that satisfies its range, with hashes, and the runtime lock agreeing with the test lock (the
README's two commands and CI install from them; Heroku-style builders from requirements.txt)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a `uv pip compile --generate-hashes` file."""
    text = (ROOT / lock).read_text()
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\n", 1)[0]
        match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\]+)", first)
        if match:
            found[canonicalize_name(match[1])] = (match[2], block.count("--hash=sha256:"))
    return found


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(line) for line in listed]


def check(lock: dict[str, tuple[str, int]], wanted: list[Requirement]) -> list[str]:
    problems = []
    for req in wanted:
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req.name} is not in the lock")
            continue
        version, hashes = lock[name]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is outside {req.specifier}")
        if hashes == 0:
            problems.append(f"{req.name} has no hash")
    return problems


def test_the_runtime_lock_pins_every_dependency_with_hashes():
    lock = pins("requirements.txt")
    assert check(lock, declared()) == []
    assert all(hashes for _, hashes in lock.values())


def test_the_test_lock_adds_the_test_tools_and_agrees_with_the_runtime_lock():
    runtime, full = pins("requirements.txt"), pins("requirements-test.txt")
    assert check(full, declared() + declared("test")) == []
    assert {name: full.get(name) for name in runtime} == runtime


def test_the_checker_finds_a_dependency_missing_or_outside_its_range():
    lock = {"slack-bolt": ("1.0.0", 2)}
    assert check(lock, [Requirement("slack-bolt>=1.21,<2"), Requirement("alembic>=1.13")]) == [
        "slack-bolt==1.0.0 is outside <2,>=1.21",
        "alembic is not in the lock",
    ]


def test_the_pinned_python_is_one_the_project_supports():
    from packaging.specifiers import SpecifierSet

    pinned = (ROOT / ".python-version").read_text().strip()
    supported = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(supported).contains(f"{pinned}.0")

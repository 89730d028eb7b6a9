"""requirements.lock is the one source of versions: it is made from today's pyproject.toml, the
tests run exactly its versions, and the Lambda requirement files pin nothing it does not."""

from __future__ import annotations

import re
import shutil
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra import lock as lockfile

ROOT = Path(__file__).resolve().parents[2]
CUDA = re.compile(r"^(nvidia-.*|triton|cuda-.*|.*-cu\d+)$")


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    ]


def test_the_lock_is_made_from_todays_pyproject() -> None:
    assert lockfile.staleness() is None
    assert lockfile.problems() == []


def test_a_dependency_added_without_relocking_is_refused_with_the_make_lock_hint(
    tmp_path: Path,
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('    "scipy>=1.11",\n', '    "scipy>=1.11",\n    "rich",\n'))
    assert pyproject.read_text() != text
    problem = lockfile.staleness(pyproject, lockfile.LOCK)
    assert problem is not None and "make lock" in problem


def test_a_loosened_pin_or_new_dev_tool_is_a_change_too(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('"httpx>=0.28,<1"', '"httpx>=0.28,<2"'))
    assert lockfile.staleness(pyproject, lockfile.LOCK) is not None
    pyproject.write_text(text.replace('"pytest>=8.3",', '"pytest>=8.3",\n    "hypothesis",'))
    assert lockfile.staleness(pyproject, lockfile.LOCK) is not None
    # a change outside the dependencies (a lint rule, a marker) does not ask for a relock
    pyproject.write_text(text.replace("line-length = 100", "line-length = 99"))
    assert lockfile.staleness(pyproject, lockfile.LOCK) is None


def test_a_lock_not_written_by_make_lock_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("httpx==0.28.1\n")
    problem = lockfile.staleness(lockfile.PYPROJECT, lock)
    assert problem is not None and "make lock" in problem


def test_every_locked_package_is_pinned_exactly_with_hashes() -> None:
    entries = lockfile.entries(lockfile.LOCK)
    assert len(entries) > 100
    unhashed = [name for name, (_, text) in entries.items() if "--hash=sha256:" not in text]
    assert unhashed == []
    # every pinned line of the file was parsed: nothing slips past as an unpinned requirement
    requirement_lines = [
        line for line in lockfile.LOCK.read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line)
    ]
    assert len(requirement_lines) == len(entries)


def test_the_lock_holds_every_declared_dependency_at_an_allowed_version() -> None:
    locked = lockfile.pins(lockfile.LOCK)
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is declared in pyproject.toml but not locked"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name} {locked[name]} vs {requirement}"
        )


def test_the_lock_takes_the_cpu_build_of_torch_and_nothing_of_cuda() -> None:
    locked = lockfile.pins(lockfile.LOCK)
    assert locked["torch"].endswith("+cpu")
    assert [name for name in locked if CUDA.match(name)] == []


def test_the_tests_run_exactly_the_locked_versions() -> None:
    """What `make install` synced: every locked package installed at its locked version, and
    nothing installed that the lock does not hold (but the project itself)."""
    locked = lockfile.pins(lockfile.LOCK)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drifted = {n: (installed.get(n), v) for n, v in locked.items() if installed.get(n) != v}
    assert drifted == {}, "(installed, locked) differ: run `make install`"
    assert set(installed) - set(locked) == {"latina"}


@pytest.mark.parametrize("derived", lockfile.DERIVED, ids=lambda d: d.name)
def test_lambda_requirements_pin_the_locked_versions(derived: lockfile.Derived) -> None:
    pins = lockfile.pins(derived.path)
    assert set(derived.roots_names()) <= set(pins)
    assert lockfile.disagreements(derived.path) == []
    assert ("--hash=" in derived.path.read_text()) is derived.hashes


@pytest.mark.parametrize("derived", lockfile.DERIVED, ids=lambda d: d.name)
def test_a_hand_edited_lambda_pin_is_caught(derived: lockfile.Derived, tmp_path: Path) -> None:
    edited = tmp_path / derived.path.name
    shutil.copy(derived.path, edited)
    text = edited.read_text()
    locked = lockfile.pins(lockfile.LOCK)["httpx"]
    edited.write_text(text.replace(f"httpx=={locked}", "httpx==0.29.0"))
    assert edited.read_text() != text
    assert lockfile.disagreements(edited) == [
        f"{edited.name}: httpx==0.29.0, requirements.lock has {locked}"
    ]


def test_a_package_the_lock_does_not_hold_is_caught(tmp_path: Path) -> None:
    edited = tmp_path / "requirements-gateway.txt"
    edited.write_text(lockfile.DERIVED[0].path.read_text() + "left-pad==1.0\n")
    assert lockfile.disagreements(edited) == [
        "requirements-gateway.txt: left-pad is not in requirements.lock"
    ]


def test_uv_is_locked_with_hashes_for_the_bootstrap() -> None:
    version, text = lockfile.entries(lockfile.LOCK)["uv"]
    assert text.startswith(f"uv=={version} ")
    assert text.count("--hash=sha256:") > 1

"""The dependency lock: one file, `requirements.lock`, made by uv from `pyproject.toml`.

    python infra/lock.py check       is the lock made from today's pyproject.toml? (stdlib only)
    python infra/lock.py write       `make lock`: relock, then write the files derived from it
    python infra/lock.py pin NAME    print the locked requirement of NAME, hashes included

`write --upgrade` (`make lock UPGRADE=1`) also moves every pin to the newest allowed release.

`requirements.lock` pins every package of the runtime and the `dev` extra for CPython 3.11 on
Linux x86-64, with the hashes of every file of each pinned version. `make install` syncs the
virtual environment to exactly that (`uv pip sync`: drifted versions are put back, strays
removed). Relocking keeps every pin that still satisfies `pyproject.toml` unless `--upgrade`.

The lock records a digest of the dependency inputs of `pyproject.toml`; `check` recomputes it,
so a dependency added without relocking stops `make install` (and so CI) with the hint to run
`make lock`. The check is offline and does not change when the registry publishes new releases.

Derived from the lock (same versions, never edited by hand):
- `infra/requirements-gateway.txt`: the gateway, worker and migrate functions' zip, with hashes;
- `infra/requirements-ml.txt`: the ML container image. Without hashes: the image takes PyTorch's
  CPU build for its own Python from PyTorch's index, a file this lock cannot hold the hash of.
  `torch` keeps its `+cpu` local version, which no CUDA build can satisfy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
COMMAND = "make lock"
DIGEST_PREFIX = "# pyproject-digest: "
HINT = "run `make lock` and commit requirements.lock and infra/requirements-*.txt"


@dataclass(frozen=True)
class Derived:
    """A requirements file for one deployed artifact: the closure of its roots, from the lock."""

    name: str
    roots: tuple[str, ...]
    hashes: bool
    about: str

    def roots_names(self) -> list[str]:
        return [canonical(root.partition("[")[0]) for root in self.roots]

    @property
    def path(self) -> Path:
        return ROOT / "infra" / f"requirements-{self.name}.txt"


DERIVED = (
    Derived(
        "gateway",
        (
            "aioboto3",
            "argon2-cffi",
            "asyncpg",
            "aws-lambda-powertools",
            "httpx",
            "itsdangerous",
            "jinja2",
            "mangum",
            "numpy",
            "openai",
            "pgqueuer[asyncpg]",
            "pillow",
            "prometheus-client",
            "pydantic",
            "pydantic-settings",
            "python-multipart",
            "starlette",
        ),
        hashes=True,
        about="The gateway's, worker's and migrate function's zip (the python3.12 runtime).",
    ),
    Derived(
        "ml",
        (
            "torch",
            "botorch",
            "gpytorch",
            "aioboto3",
            "asyncpg",
            "aws-lambda-powertools",
            "httpx",
            "mangum",
            "numpy",
            "pillow",
            "prometheus-client",
            "pydantic",
            "pydantic-settings",
            "python-multipart",
            "scipy",
            "starlette",
        ),
        hashes=False,
        about=(
            "The ML service's container image (infra/Dockerfile.ml). No hashes: the image\n"
            "# installs PyTorch's CPU build for its own Python from PyTorch's index; the +cpu\n"
            "# pin keeps any CUDA build out."
        ),
    ),
)


def pyproject_digest(pyproject: Path = PYPROJECT) -> str:
    """A digest of everything in pyproject.toml that decides what the lock holds."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "dev": project.get("optional-dependencies", {}).get("dev", []),
        "build-system": data.get("build-system", {}).get("requires", []),
        "target": [PYTHON_VERSION, PLATFORM],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path = LOCK) -> str | None:
    if not lock.exists():
        return None
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
    return None


def staleness(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> str | None:
    """Why the lock does not match pyproject.toml, or None when it does."""
    recorded = recorded_digest(lock)
    if recorded is None:
        return f"{lock.name} is missing or was not written by `{COMMAND}`: {HINT}"
    if recorded != pyproject_digest(pyproject):
        return (
            f"pyproject.toml's dependencies changed since {lock.name} was made: {HINT} "
            "(the environment is installed from the lock, never from pyproject.toml directly)"
        )
    return None


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(path: Path) -> dict[str, tuple[str, str]]:
    """The pinned packages of a requirements file: name -> (version, the whole entry's text)."""
    found: dict[str, tuple[str, str]] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        match = _PIN.match(line)
        if not match:
            continue
        block = [line]
        for nxt in lines[i + 1 :]:
            if not nxt.startswith("    --hash"):
                break
            block.append(nxt)
        found[canonical(match.group(1))] = (match.group(3), "\n".join(block))
    return found


def pins(path: Path) -> dict[str, str]:
    return {name: version for name, (version, _) in entries(path).items()}


def disagreements(derived: Path, lock: Path = LOCK) -> list[str]:
    """Where a derived requirements file differs from the lock (a pin edited by hand)."""
    locked = entries(lock)
    problems = []
    for name, (version, text) in entries(derived).items():
        if name not in locked:
            problems.append(f"{derived.name}: {name} is not in {lock.name}")
            continue
        if version != locked[name][0]:
            problems.append(f"{derived.name}: {name}=={version}, {lock.name} has {locked[name][0]}")
        hashes = set(re.findall(r"--hash=(\S+)", text))
        if not hashes <= set(re.findall(r"--hash=(\S+)", locked[name][1])):
            problems.append(f"{derived.name}: {name} has hashes {lock.name} does not")
    return problems


def problems() -> list[str]:
    """Everything that makes the lock or a file derived from it untrustworthy, with the hint."""
    stale = staleness()
    found = [stale] if stale else []
    found += [f"{p}: {HINT}" for d in DERIVED for p in disagreements(d.path)]
    return found


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("uv is not installed: run `make install` first")
    return uv


def _compile(*args: str) -> None:
    subprocess.run(  # noqa: S603 (our own arguments)
        [
            _uv(),
            "pip",
            "compile",
            "--quiet",
            f"--python-version={PYTHON_VERSION}",
            f"--python-platform={PLATFORM}",
            f"--custom-compile-command={COMMAND}",
            *args,
        ],
        check=True,
        cwd=ROOT,
    )


def write(upgrade: bool) -> None:
    _compile(
        "pyproject.toml",
        "--extra=dev",
        "--generate-hashes",
        "--output-file=requirements.lock",
        *(["--upgrade"] if upgrade else []),
    )
    text = LOCK.read_text()
    LOCK.write_text(f"{DIGEST_PREFIX}{pyproject_digest()}\n{text}")
    for derived in DERIVED:
        roots = ROOT / "infra" / f".{derived.name}.in"
        roots.write_text("\n".join(derived.roots) + "\n")
        try:
            derived.path.unlink(missing_ok=True)  # no preferences but the lock's
            _compile(
                str(roots.relative_to(ROOT)),
                "--constraint=requirements.lock",
                "--no-annotate",
                "--no-header",
                *(["--generate-hashes"] if derived.hashes else []),
                f"--output-file={derived.path.relative_to(ROOT)}",
            )
        finally:
            roots.unlink()
        header = (
            f"# {derived.about}\n# Generated from requirements.lock by `{COMMAND}`: do not edit.\n"
        )
        derived.path.write_text(header + derived.path.read_text())
    print(f"wrote {LOCK.name} ({len(pins(LOCK))} packages) and", end=" ")
    print(", ".join(str(d.path.relative_to(ROOT)) for d in DERIVED))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    write_parser = sub.add_parser("write")
    write_parser.add_argument("--upgrade", action="store_true")
    pin_parser = sub.add_parser("pin")
    pin_parser.add_argument("name")
    args = parser.parse_args()
    if args.command == "check":
        found = problems()
        if found:
            sys.exit("\n".join(f"error: {problem}" for problem in found))
    elif args.command == "write":
        write(args.upgrade or os.environ.get("UPGRADE") == "1")
    else:
        found = entries(LOCK).get(canonical(args.name))
        if found is None:
            sys.exit(f"{args.name} is not in {LOCK.name}")
        print(found[1].replace(" \\\n", " ").replace("\\", ""))


if __name__ == "__main__":
    main()

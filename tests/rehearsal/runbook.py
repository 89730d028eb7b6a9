"""``infra/RUNBOOK.md``'s shell blocks, for the rehearsal to run as an operator would.

Every fenced ``sh`` block of the runbook is preceded by a marker comment:
``<!-- rehearsal: run NAME -->`` (the rehearsal runs it, under that name, with bash) or
``<!-- rehearsal: not run: WHY -->`` (it cannot run on this machine, and the reason).
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tests.rehearsal.package import REPO

RUNBOOK = REPO / "infra" / "RUNBOOK.md"
RAN: set[str] = set()  # the blocks run so far in this session
_BLOCK = re.compile(
    r"(?:<!-- rehearsal: (?P<marker>[^>]*?) -->\s*\n)?[ \t]*```sh\n(?P<code>.*?)```", re.S
)


@dataclass(frozen=True)
class Block:
    code: str
    run_as: str | None  # the name the rehearsal runs it under
    not_run_because: str | None
    line: int


def blocks(path: Path = RUNBOOK) -> list[Block]:
    text = path.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        marker = (match["marker"] or "").strip()
        code = "\n".join(
            line.removeprefix(_indent(match["code"])) for line in match["code"].splitlines()
        )
        line = text.count("\n", 0, match.start("code"))
        run_as = marker.removeprefix("run ").strip() if marker.startswith("run ") else None
        why = marker.removeprefix("not run:").strip() if marker.startswith("not run:") else None
        found.append(Block(code, run_as, why, line))
    return found


def _indent(code: str) -> str:
    first = next((line for line in code.splitlines() if line.strip()), "")
    return first[: len(first) - len(first.lstrip())]


def block(name: str) -> Block:
    matches = [b for b in blocks() if b.run_as == name]
    assert len(matches) == 1, f"the runbook has {len(matches)} blocks to run as {name!r}"
    return matches[0]


async def run(name: str, environment: dict[str, str], *, timeout: float = 180) -> str:
    """Run the block ``name`` with bash from the repository root (``set -euo pipefail``), with
    ``.venv/bin`` first on PATH (the runbook's ``aws``) and ``environment``; its stdout. Async:
    a block may call the functions, which this process serves."""
    env = {
        "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(REPO)),
        **environment,
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "set -euo pipefail\n" + block(name).code,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        raise AssertionError(
            f"runbook block {name!r} still running after {timeout:.0f} s"
        ) from None
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, f"runbook block {name!r} failed:\n{stdout}\n{stderr}"
    RAN.add(name)
    return stdout

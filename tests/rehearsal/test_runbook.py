"""``infra/RUNBOOK.md`` says, for each of its shell blocks, whether the rehearsal runs it."""

from __future__ import annotations

from tests.rehearsal import runbook


def test_every_shell_block_of_the_runbook_runs_in_the_rehearsal_or_says_why_not() -> None:
    found = runbook.blocks()
    assert len(found) >= 10  # the parser sees the runbook's blocks
    unmarked = [b.line for b in found if b.run_as is None and not b.not_run_because]
    assert unmarked == [], f"runbook blocks at lines {unmarked} say neither run nor why not"
    names = [b.run_as for b in found if b.run_as]
    assert len(names) == len(set(names)), names
    fences = runbook.RUNBOOK.read_text().count("```")
    assert fences == 2 * len(found), "every fenced block of the runbook is an sh block"

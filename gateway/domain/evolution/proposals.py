"""What an evolver proposes, the ``Evolver`` protocol, and the checks every proposal passes.

The patterns and ``normalise`` are shared with the evolvers: the heuristic one drops parent terms
a proposal may not carry, the LLM one flattens whitespace after validating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.domain.evolution.analysis import Analysis

PROMPT_MAX_CHARS = 1500
NEGATIVE_MAX_CHARS = 800

URL_PATTERN = re.compile(r"https?://|\bwww\.", re.IGNORECASE)
MARKUP_PATTERN = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]*>|```|(?:^|\n)[ \t]*#{1,6}[ \t]")
CONTROL_PATTERN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Proposal:
    prompt: str
    negative_prompt: str
    changes: tuple[str, ...]
    reasoning: str
    origin: Literal["llm", "heuristic"]
    fallback_reason: str | None = None  # set when the LLM failed and the heuristic answered


class Evolver(Protocol):
    name: str

    async def propose(self, analysis: Analysis) -> Proposal: ...


class ProposalRejected(ValueError):
    """A proposed prompt is unusable; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise(text: str) -> str:
    return WHITESPACE.sub(" ", text).strip().lower()


def validate_proposal(
    parent_prompt: str, parent_negative: str, prompt: str, negative_prompt: str
) -> None:
    """Refuse a prompt that is empty, too long, unchanged, or carries URLs, markup or control
    characters. Raises ``ProposalRejected``."""
    if not prompt.strip():
        raise ProposalRejected("the prompt is empty")
    if not negative_prompt.strip():
        raise ProposalRejected("the negative prompt is empty")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise ProposalRejected(f"the prompt is longer than {PROMPT_MAX_CHARS} characters")
    if len(negative_prompt) > NEGATIVE_MAX_CHARS:
        raise ProposalRejected(
            f"the negative prompt is longer than {NEGATIVE_MAX_CHARS} characters"
        )
    if normalise(prompt) == normalise(parent_prompt):
        raise ProposalRejected("the prompt is the parent's prompt")
    for name, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if URL_PATTERN.search(text):
            raise ProposalRejected(f"the {name} contains a URL")
        if MARKUP_PATTERN.search(text):
            raise ProposalRejected(f"the {name} contains markup")
        if CONTROL_PATTERN.search(text):
            raise ProposalRejected(f"the {name} contains control characters")

"""Evolvers: from an ``Analysis`` of recent samples to a proposed prompt version.

``HeuristicEvolver`` (``heuristic``, the offline default) edits the prompt through the complaint
rule table; ``OpenAIEvolver`` (``llm``) asks an OpenAI-compatible endpoint and falls back to the
heuristic. ``build_evolver`` picks one from the settings. The names of ``proposals``,
``heuristic`` and ``llm`` are re-exported here so that importers need only this module.
"""

from __future__ import annotations

from gateway.evolution.heuristic import (
    COMPLAINTS_ACTED_ON,
    NEGATIVES_PER_COMPLAINT,
    HeuristicEvolver,
    split_terms,
)
from gateway.evolution.llm import (
    COMMENT_CLOSE,
    COMMENT_LIMIT,
    COMMENT_OPEN,
    DATA_MARKER,
    SYSTEM_PROMPT_FILE,
    USER_INSTRUCTIONS,
    ImprovedPrompt,
    OpenAIEvolver,
    load_system_prompt,
    log,
    user_message,
)
from gateway.evolution.proposals import (
    NEGATIVE_MAX_CHARS,
    PROMPT_MAX_CHARS,
    Evolver,
    Proposal,
    ProposalRejected,
    validate_proposal,
)
from shared.settings import Settings

__all__ = [
    "COMMENT_CLOSE",
    "COMMENT_LIMIT",
    "COMMENT_OPEN",
    "COMPLAINTS_ACTED_ON",
    "DATA_MARKER",
    "NEGATIVES_PER_COMPLAINT",
    "NEGATIVE_MAX_CHARS",
    "PROMPT_MAX_CHARS",
    "SYSTEM_PROMPT_FILE",
    "USER_INSTRUCTIONS",
    "Evolver",
    "HeuristicEvolver",
    "ImprovedPrompt",
    "OpenAIEvolver",
    "Proposal",
    "ProposalRejected",
    "build_evolver",
    "load_system_prompt",
    "log",
    "split_terms",
    "user_message",
    "validate_proposal",
]


def build_evolver(settings: Settings) -> Evolver:
    """``OpenAIEvolver`` (falling back to the heuristic) when ``OPENAI_API_KEY`` is set, else
    ``HeuristicEvolver``."""
    if settings.openai_api_key:
        return OpenAIEvolver(settings)
    return HeuristicEvolver()

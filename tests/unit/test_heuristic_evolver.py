"""The offline evolver really edits the prompt, from the complaints, within the limits."""

from __future__ import annotations

import json

import pytest

from gateway.adapters.llm import build_evolver
from gateway.adapters.prompt_export import PROMPTS_DIR
from gateway.domain.evolution.analysis import Analysis, RatedOption, analyse
from gateway.domain.evolution.complaints import REINFORCEMENTS, RULES_BY_KEY
from gateway.domain.evolution.heuristic import HeuristicEvolver, split_terms
from gateway.domain.evolution.proposals import (
    NEGATIVE_MAX_CHARS,
    PROMPT_MAX_CHARS,
    Proposal,
    ProposalRejected,
    validate_proposal,
)
from shared.settings import Settings

SEED = json.loads((PROMPTS_DIR / "versions" / "v1.0.0.json").read_text())
RENDER = "looks like a 3d render, fake"
DARK = "too dark"
LIGHT = "lighting looks artificial"


def options(comments: list[str], rating: int = 2, good: str = "") -> list[RatedOption]:
    """Two options per sample: A rated ``rating`` with the comment, B rated 4 with ``good``."""
    made = []
    for n, comment in enumerate(comments, start=1):
        for name, api, stars, text in (
            ("A", "leonardo", rating, comment),
            ("B", "stable_diffusion", 4, good),
        ):
            made.append(
                RatedOption(n, f"exp_{n}", api, name, stars, text, "v1.0.0", {"guidance_scale": 7})
            )
    return made


def seed_analysis(comments: list[str], **kwargs: object) -> Analysis:
    return analyse(
        "v1.0.0",
        SEED["prompt"],
        SEED["negative_prompt"],
        options(comments, **kwargs),  # type: ignore[arg-type]
    )


def propose(analysis: Analysis) -> Proposal:
    return HeuristicEvolver().propose_now(analysis)


def assert_valid(analysis: Analysis, proposal: Proposal) -> None:
    validate_proposal(
        analysis.parent_prompt,
        analysis.parent_negative_prompt,
        proposal.prompt,
        proposal.negative_prompt,
    )
    assert proposal.origin == "heuristic" and proposal.fallback_reason is None
    negative = [t.lower() for t in split_terms(proposal.negative_prompt)]
    assert len(negative) == len(set(negative)), "duplicate negative terms"
    prompt = [t.lower() for t in split_terms(proposal.prompt)]
    assert len(prompt) == len(set(prompt)), "duplicate prompt terms"


async def test_render_darkness_and_lighting_complaints_get_their_edits() -> None:
    analysis = seed_analysis([RENDER, RENDER, DARK, LIGHT, DARK, RENDER, LIGHT, "", "", RENDER])
    proposal = await HeuristicEvolver().propose(analysis)
    assert_valid(analysis, proposal)

    render, dark, light = (
        RULES_BY_KEY[k] for k in ("render_look", "too_dark", "artificial_lighting")
    )
    for rule in (render, dark, light):
        assert rule.prompt_phrases[0] in proposal.prompt
        assert rule.prompt_phrases[0] not in SEED["prompt"]
    assert "rendered look" in proposal.negative_prompt
    assert "underexposed" in proposal.negative_prompt
    assert "studio lighting" in proposal.negative_prompt
    # nothing of the parent is lost: the edits add to it
    assert set(split_terms(SEED["prompt"])) <= set(split_terms(proposal.prompt))
    assert set(split_terms(SEED["negative_prompt"])) <= set(split_terms(proposal.negative_prompt))
    # the most frequent complaint's phrase comes first, right after the subject
    assert split_terms(proposal.prompt)[:2] == [
        "professional interior photograph",
        render.prompt_phrases[0],
    ]

    changes = " | ".join(proposal.changes)
    assert f"Added '{render.prompt_phrases[0]}' to the prompt" in changes
    assert "'rendered look'" in changes and "'underexposed'" in changes
    assert "4 comments" in changes and "2 comments" in changes
    # the reasoning quotes the comments that caused the edits, with their counts
    for comment in (RENDER, DARK, LIGHT):
        assert f'"{comment}"' in proposal.reasoning
    assert "came up in 4 comments" in proposal.reasoning
    assert "render" in proposal.reasoning.lower()


async def test_good_depth_in_a_low_rated_comment_adds_no_depth_edit() -> None:
    analysis = seed_analysis(["Good depth, colors slightly off"] * 3)
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert RULES_BY_KEY["colors_off"].prompt_phrases[0] in proposal.prompt
    flat = RULES_BY_KEY["flat"]
    assert not any(p in proposal.prompt for p in flat.prompt_phrases)
    assert not any(t in proposal.negative_prompt for t in flat.negative_terms)


def test_the_same_analysis_gives_the_same_proposal() -> None:
    comments = [RENDER, "blurry, walls bent", DARK, "messy", "plastic sofa", "too bright"]
    first = propose(seed_analysis(comments))
    second = propose(seed_analysis(list(comments)))
    assert first == second
    assert len(first.changes) >= 4


def test_without_complaints_it_stresses_what_well_rated_comments_praised() -> None:
    analysis = seed_analysis(["", "", ""], rating=5, good="Good depth, lovely")
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert RULES_BY_KEY["flat"].prompt_phrases[0] in proposal.prompt
    assert proposal.reasoning.count("No complaint recurred") == 1
    assert '"Good depth, lovely"' in proposal.reasoning


def test_without_any_comment_it_adds_a_photorealism_cue_the_prompt_lacks() -> None:
    analysis = seed_analysis(["", ""], rating=4)
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert REINFORCEMENTS[0] in proposal.prompt and REINFORCEMENTS[0] not in SEED["prompt"]
    assert proposal.negative_prompt == SEED["negative_prompt"]
    assert "No complaint recurred" in proposal.reasoning
    # a prompt that already has the first cue gets the next one
    again = propose(analyse("v1.0.1", proposal.prompt, proposal.negative_prompt, []))
    assert REINFORCEMENTS[1] in again.prompt


def test_repeated_rounds_stay_valid_and_within_the_length_caps() -> None:
    comments = [RENDER, "too dark, blurry", LIGHT, "colors off, messy", "plastic, grainy, flat"]
    prompt, negative = SEED["prompt"], SEED["negative_prompt"]
    for round_ in range(25):
        rotated = comments[round_ % 5 :] + comments[: round_ % 5]
        analysis = analyse("v", prompt, negative, options(rotated))
        proposal = propose(analysis)
        assert_valid(analysis, proposal)
        assert len(proposal.prompt) <= PROMPT_MAX_CHARS
        assert len(proposal.negative_prompt) <= NEGATIVE_MAX_CHARS
        prompt, negative = proposal.prompt, proposal.negative_prompt
    assert len(prompt) > 1300 and len(negative) > 700  # the caps were reached, and held


def test_a_full_prompt_drops_an_earlier_rounds_phrase_to_answer_a_new_complaint() -> None:
    old = RULES_BY_KEY["clutter"].prompt_phrases[0]  # added for clutter, no longer complained of
    filler = [f"detail number {i} of the room" for i in range(60)]
    terms = ["professional interior photograph", old]
    for extra in filler:
        if len(", ".join([*terms, extra])) > PROMPT_MAX_CHARS - 20:
            break
        terms.append(extra)
    parent = ", ".join(terms)
    analysis = analyse("v", parent, "cartoon", options([DARK, DARK]))
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert RULES_BY_KEY["too_dark"].prompt_phrases[0] in proposal.prompt
    assert old not in proposal.prompt
    assert any(c.startswith(f"Dropped '{old}'") for c in proposal.changes)
    assert len(proposal.prompt) <= PROMPT_MAX_CHARS


def test_an_over_long_parent_is_trimmed_to_the_caps() -> None:
    parent = ", ".join(f"term {i} of a very long manual prompt" for i in range(80))
    negative = ", ".join(f"bad thing {i}" for i in range(120))
    analysis = analyse("v", parent, negative, options([DARK, DARK]))
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert len(proposal.prompt) <= PROMPT_MAX_CHARS
    assert len(proposal.negative_prompt) <= NEGATIVE_MAX_CHARS


def test_when_no_phrase_fits_it_still_changes_the_prompt() -> None:
    parent = ", ".join(["interior photo"] + [f"x{i:04d}" for i in range(212)])
    assert PROMPT_MAX_CHARS - 5 < len(parent) <= PROMPT_MAX_CHARS  # no table phrase fits
    analysis = analyse("v", parent, "cartoon", options(["", ""], rating=5))
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert sorted(split_terms(proposal.prompt)) == sorted(split_terms(parent))
    assert "moved forward" in proposal.reasoning


def test_unsafe_terms_of_a_parent_do_not_survive() -> None:
    parent = "interior photograph, see https://example.invalid/x, <b>bold</b>, natural light"
    analysis = analyse("v", parent, "cartoon", options([DARK]))
    proposal = propose(analysis)
    assert_valid(analysis, proposal)
    assert "example.invalid" not in proposal.prompt and "<b>" not in proposal.prompt


@pytest.mark.parametrize(
    ("prompt", "negative", "reason"),
    [
        ("", "cartoon", "empty"),
        ("   ", "cartoon", "empty"),
        ("new prompt", "", "negative prompt is empty"),
        ("x" * (PROMPT_MAX_CHARS + 1), "cartoon", "longer than 1500"),
        ("new prompt", "y" * (NEGATIVE_MAX_CHARS + 1), "longer than 800"),
        ("  Interior   PHOTO, natural light ", "cartoon", "parent's prompt"),
        ("interior photo, see https://example.invalid", "cartoon", "URL"),
        ("interior photo, http://x", "cartoon", "URL"),
        ("interior photo, www.example.invalid", "cartoon", "URL"),
        ("new prompt", "see WWW.example.invalid", "URL"),
        ("interior <b>photo</b>", "cartoon", "markup"),
        ("```interior photo```", "cartoon", "markup"),
        ("# Improved prompt\ninterior photo", "cartoon", "markup"),
        ("interior photo\n## heading", "cartoon", "markup"),
        ("interior\x07 photo", "cartoon", "control"),
    ],
)
def test_validate_proposal_refuses_unusable_prompts(
    prompt: str, negative: str, reason: str
) -> None:
    with pytest.raises(ProposalRejected) as caught:
        validate_proposal("interior photo, natural light", "cartoon", prompt, negative)
    assert reason in caught.value.reason


def test_validate_proposal_accepts_a_changed_clean_prompt() -> None:
    # "3 < 4" is text, not markup; the call raises ProposalRejected when it refuses
    assert (
        validate_proposal(
            "interior photo, natural light",
            "cartoon",
            "interior photo, soft natural light, f/8, 3 < 4",
            "cartoon, cgi",
        )
        is None
    )


def test_build_evolver_is_offline_without_an_api_key() -> None:
    evolver = build_evolver(Settings(openai_api_key=None))
    assert isinstance(evolver, HeuristicEvolver) and evolver.name == "heuristic"

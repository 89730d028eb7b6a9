"""What an evolution round reads from the recent samples: averages, complaints, extremes."""

from __future__ import annotations

import pytest

from gateway.domain.evolution.analysis import RatedOption, analyse, sanitize_comment
from gateway.domain.evolution.complaints import RULES, detect_complaints, detect_praise

PROMPT = "professional interior photograph, photorealistic"
NEGATIVE = "cartoon, blurry"


def option(
    sample: int,
    rating: int,
    comments: str = "",
    *,
    api: str = "leonardo",
    version: str = "v1.0.0",
) -> RatedOption:
    return RatedOption(
        sample_number=sample,
        experiment_id=f"exp_{sample}",
        api=api,
        option="A" if api == "leonardo" else "B",
        rating=rating,
        comments=comments,
        prompt_version=version,
        parameters={"guidance_scale": 7.5, "num_inference_steps": 30},
    )


def test_average_counts_only_the_parent_versions_options_and_per_api_counts_all() -> None:
    options = [
        option(1, 2, api="leonardo"),
        option(1, 4, api="stable_diffusion"),
        option(2, 5, api="leonardo", version="v1.0.1"),
        option(2, 1, api="stable_diffusion", version="v1.0.1"),
    ]
    analysis = analyse("v1.0.0", PROMPT, NEGATIVE, options)
    assert analysis.average_rating == pytest.approx(3.0)
    assert analysis.per_api == {"leonardo": pytest.approx(3.5), "stable_diffusion": 2.5}
    assert analysis.samples == tuple(options)
    assert (analysis.parent_version, analysis.parent_prompt) == ("v1.0.0", PROMPT)
    assert analysis.parent_negative_prompt == NEGATIVE


def test_average_is_none_when_no_option_used_the_parent() -> None:
    analysis = analyse("v2.0.0", PROMPT, NEGATIVE, [option(1, 4), option(2, 3)])
    assert analysis.average_rating is None
    assert analysis.per_api == {"leonardo": 3.5}


def test_complaints_come_only_from_low_rated_comments_most_frequent_first() -> None:
    options = [
        option(1, 2, "too dark, looks like a 3d render"),
        option(2, 3, "Way too dark in the corners"),
        option(3, 1, "too dark"),
        option(4, 3, "cgi look"),
        option(5, 5, "too dark but I love it"),  # well rated: not a complaint
        option(6, 4, "blurry"),  # well rated: not a complaint
        option(7, 2, ""),
    ]
    analysis = analyse("v1.0.0", PROMPT, NEGATIVE, options)
    assert [(c.key, c.count) for c in analysis.complaints] == [
        ("too_dark", 3),
        ("render_look", 2),
    ]
    dark = analysis.complaints[0]
    assert dark.label == "too dark / underexposed"
    assert dark.examples == (
        "too dark, looks like a 3d render",
        "Way too dark in the corners",
        "too dark",
    )


def test_complaint_examples_are_distinct_sanitized_and_at_most_three() -> None:
    noisy = "too\x00 dark\n\n  and\tgrim " + "x" * 400
    options = [
        option(i, 1, c)
        for i, c in enumerate([noisy, "too dark", "too dark", "very dim room", "so gloomy"])
    ]
    (dark,) = analyse("v1.0.0", PROMPT, NEGATIVE, options).complaints
    assert dark.count == 5
    assert len(dark.examples) == 3 and len(set(dark.examples)) == 3
    assert dark.examples[0].startswith("too dark and grim xxx")
    assert "\x00" not in dark.examples[0] and "\n" not in dark.examples[0]
    assert len(dark.examples[0]) <= 160 and dark.examples[0].endswith("…")


def test_good_depth_is_not_a_flat_complaint_but_colors_off_is_one() -> None:
    analysis = analyse(
        "v1.0.0", PROMPT, NEGATIVE, [option(1, 3, "Good depth, colors slightly off")]
    )
    assert [c.key for c in analysis.complaints] == ["colors_off"]


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        ("looks like a 3d render, fake", {"render_look"}),
        ("lighting looks artificial", {"artificial_lighting"}),
        ("fake looking light", {"artificial_lighting"}),
        ("too dark", {"too_dark"}),
        ("not too dark", set()),
        ("no depth at all", {"flat"}),
        ("feels flat", {"flat"}),
        ("doesn't look flat", set()),
        ("good depth", set()),
        ("washed out, overexposed windows", {"too_bright"}),
        ("walls are bent and the lines warped", {"distorted_geometry"}),
        ("too cluttered", {"clutter"}),
        ("no clutter, nice", set()),
        ("plastic sofa", {"plastic"}),
        ("way oversaturated", {"oversaturated"}),
        ("blurry and soft", {"blurry"}),
        ("soft light, lovely", set()),
        ("Perfect photorealism!", set()),
    ],
)
def test_comments_are_read_for_the_complaints_they_make(comment: str, expected: set[str]) -> None:
    assert set(detect_complaints(comment)) == expected


def test_praise_is_read_separately_from_complaints() -> None:
    assert detect_praise("Good depth, colors slightly off") == ("flat",)
    assert "render_look" in detect_praise("Perfect photorealism!")
    assert detect_praise("not realistic at all") == ()


def test_best_and_worst_are_the_extremes_and_disjoint() -> None:
    options = [
        option(1, 3),
        option(2, 5, "great"),
        option(3, 1, "awful"),
        option(4, 4),
        option(5, 2),
        option(6, 5),
        option(7, 1),
        option(8, 3),
    ]
    analysis = analyse("v1.0.0", PROMPT, NEGATIVE, options)
    # among equal ratings, commented options come first, then the most recent
    assert [(o.sample_number, o.rating) for o in analysis.best] == [(2, 5), (6, 5), (4, 4)]
    assert [(o.sample_number, o.rating) for o in analysis.worst] == [(3, 1), (7, 1), (5, 2)]


def test_with_few_options_best_and_worst_split_them() -> None:
    low, high = option(1, 2, "too dark"), option(1, 5, api="stable_diffusion")
    analysis = analyse("v1.0.0", PROMPT, NEGATIVE, [low, high])
    assert analysis.best == (high,)
    assert analysis.worst == (low,)
    empty = analyse("v1.0.0", PROMPT, NEGATIVE, [])
    assert (empty.best, empty.worst, empty.complaints, empty.per_api) == ((), (), (), {})


def test_sanitize_comment_strips_controls_collapses_whitespace_and_caps() -> None:
    assert sanitize_comment("  too\u200b dark\r\n\tplease\x1b[31m ") == "too dark please[31m"
    capped = sanitize_comment("word " * 100, limit=50)
    assert len(capped) <= 50 and capped.endswith("…")
    assert sanitize_comment("short", limit=50) == "short"


def test_every_rule_phrase_is_one_prompt_term() -> None:
    # a phrase with a comma would split into two terms in the next round's prompt
    phrases = [p for r in RULES for p in (*r.prompt_phrases, *r.negative_terms)]
    assert all("," not in p for p in phrases)
    assert len({r.key for r in RULES}) == len(RULES)

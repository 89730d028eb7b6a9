"""What an evolution round looks at: the recent rated options, their averages, the recurring
complaints in low-rated comments, and the best and worst examples."""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.domain.evolution.complaints import RULES, RULES_BY_KEY, detect_complaints

LOW_RATING = 3  # comments on options rated this or lower are read for complaints
EXAMPLES = 3  # best, worst, and excerpts per complaint
EXCERPT_LIMIT = 160
COMMENT_READ_LIMIT = 2000  # ratings cap comments at 2,000 characters
_SPACE = re.compile(r"\s+")
_RULE_ORDER = {rule.key: index for index, rule in enumerate(RULES)}


@dataclass(frozen=True)
class RatedOption:
    sample_number: int
    experiment_id: str
    api: str  # one of domain.arms.APIS
    option: str  # one of domain.arms.OPTIONS
    rating: int  # 1..5
    comments: str  # may be ""
    prompt_version: str
    parameters: dict[str, float | int]


@dataclass(frozen=True)
class Complaint:
    key: str
    label: str
    count: int  # low-rated comments that show it
    examples: tuple[str, ...]  # up to 3 distinct sanitized excerpts


@dataclass(frozen=True)
class Analysis:
    parent_version: str
    parent_prompt: str
    parent_negative_prompt: str
    samples: tuple[RatedOption, ...]
    average_rating: float | None  # over the options rendered with ``parent_version``
    per_api: dict[str, float]
    complaints: tuple[Complaint, ...]  # most frequent first
    best: tuple[RatedOption, ...]
    worst: tuple[RatedOption, ...]


def sanitize_comment(text: str, limit: int = 300) -> str:
    """A trainer's comment made safe to quote: control and format characters removed,
    whitespace collapsed to single spaces, at most ``limit`` characters (an ellipsis marks a cut).
    """
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    flat = _SPACE.sub(" ", kept).strip()
    if len(flat) <= limit:
        return flat
    return flat[: max(limit - 1, 0)].rstrip() + "…"


def _mean(values: Sequence[int]) -> float:
    return round(statistics.fmean(values), 4)


def _complaints(options: Sequence[RatedOption]) -> tuple[Complaint, ...]:
    found: dict[str, list[str]] = {}
    for option in options:
        if option.rating > LOW_RATING or not option.comments:
            continue
        excerpt = sanitize_comment(option.comments, EXCERPT_LIMIT)
        # read what a person sees: control characters must not hide (or forge) a complaint
        for key in detect_complaints(sanitize_comment(option.comments, COMMENT_READ_LIMIT)):
            found.setdefault(key, []).append(excerpt)
    ordered = sorted(found.items(), key=lambda item: (-len(item[1]), _RULE_ORDER[item[0]]))
    return tuple(
        Complaint(
            key=key,
            label=RULES_BY_KEY[key].label,
            count=len(excerpts),
            examples=tuple(dict.fromkeys(excerpts))[:EXAMPLES],
        )
        for key, excerpts in ordered
    )


def _extremes(
    options: Sequence[RatedOption],
) -> tuple[tuple[RatedOption, ...], tuple[RatedOption, ...]]:
    """The best and the worst options, disjoint: with fewer than six options the best take the
    upper half and the worst the rest. Among equal ratings, commented and recent options first."""

    def informative(o: RatedOption) -> tuple[bool, int, str]:
        return (not o.comments.strip(), -o.sample_number, o.option)

    by_best = sorted(options, key=lambda o: (-o.rating, *informative(o)))
    best = by_best[: min(EXAMPLES, (len(options) + 1) // 2)]
    rest = by_best[len(best) :]
    worst = sorted(rest, key=lambda o: (o.rating, *informative(o)))[:EXAMPLES]
    return tuple(best), tuple(worst)


def analyse(
    parent_version: str,
    parent_prompt: str,
    parent_negative_prompt: str,
    samples: Sequence[RatedOption],
) -> Analysis:
    """Summarise the rated options of the last samples for an evolver.

    Args:
        parent_version: The version being evolved (the current one).
        parent_prompt: Its prompt.
        parent_negative_prompt: Its negative prompt.
        samples: The rated options of the window (any prompt versions).

    Returns:
        The averages (the parent's own, and per API over every option), the complaints found
        in comments on options rated ``LOW_RATING`` or lower, and the best and worst options.
    """
    options = tuple(samples)
    own = [o.rating for o in options if o.prompt_version == parent_version]
    per_api: dict[str, list[int]] = {}
    for option in options:
        per_api.setdefault(option.api, []).append(option.rating)
    best, worst = _extremes(options)
    return Analysis(
        parent_version=parent_version,
        parent_prompt=parent_prompt,
        parent_negative_prompt=parent_negative_prompt,
        samples=options,
        average_rating=_mean(own) if own else None,
        per_api={api: _mean(ratings) for api, ratings in sorted(per_api.items())},
        complaints=_complaints(options),
        best=best,
        worst=worst,
    )

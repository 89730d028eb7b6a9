"""(Just over 300 lines: the evolver and the draft it edits are one concern.)

The offline evolver: edits the prompt through the complaint rule table.

``HeuristicEvolver`` is the default when no LLM is configured and the fallback when the LLM fails.
"""

from __future__ import annotations

import re
from collections import Counter

from gateway.domain.evolution.analysis import (
    COMMENT_READ_LIMIT,
    LOW_RATING,
    Analysis,
    Complaint,
    sanitize_comment,
)
from gateway.domain.evolution.complaints import REINFORCEMENTS, RULES, RULES_BY_KEY, detect_praise
from gateway.domain.evolution.proposals import (
    CONTROL_PATTERN,
    MARKUP_PATTERN,
    NEGATIVE_MAX_CHARS,
    PROMPT_MAX_CHARS,
    URL_PATTERN,
    Proposal,
    normalise,
)

COMPLAINTS_ACTED_ON = 4  # the most frequent complaints get edits; the rest wait for a later round
NEGATIVES_PER_COMPLAINT = 2


def split_terms(text: str) -> list[str]:
    """The comma-separated terms of a prompt; commas inside parentheses do not split."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth <= 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    terms.append("".join(current).strip())
    return [t for t in terms if t]


def _join(terms: list[str]) -> str:
    return ", ".join(terms)


def _contains(terms: list[str], phrase: str) -> bool:
    return (
        re.search(rf"(?<!\w){re.escape(normalise(phrase))}(?!\w)", normalise(_join(terms)))
        is not None
    )


_PHRASE_OWNER = {normalise(p): r.key for r in RULES for p in r.prompt_phrases} | {
    normalise(p): "reinforcement" for p in REINFORCEMENTS
}
_NEGATIVE_OWNER = {normalise(t): r.key for r in RULES for t in r.negative_terms}


class _Draft:
    """The prompt and negative prompt being edited, and the edits in words."""

    def __init__(self, analysis: Analysis, protected: set[str]) -> None:
        self.changes: list[str] = []
        self.prompt = self._safe_terms(analysis.parent_prompt, "prompt")
        self.negative = self._safe_terms(analysis.parent_negative_prompt, "negative prompt")
        self.protected = protected  # rule keys whose earlier phrases must stay
        self.added: set[str] = set()
        self.inserted = 0

    def _safe_terms(self, text: str, name: str) -> list[str]:
        """The parent's terms without any a proposal may not carry (URLs, markup)."""
        terms = split_terms(text)
        for term in terms:
            if (
                URL_PATTERN.search(term)
                or MARKUP_PATTERN.search(term)
                or CONTROL_PATTERN.search(term)
            ):
                self.changes.append(
                    f"Removed a URL, markup or control character term from the {name}"
                )
        return [
            t
            for t in terms
            if not (URL_PATTERN.search(t) or MARKUP_PATTERN.search(t) or CONTROL_PATTERN.search(t))
        ]

    def _make_room(self, terms: list[str], owners: dict[str, str], cap: int, extra: str) -> bool:
        """Drop phrases an earlier round added for complaints not made now (least emphasised
        first) until ``extra`` fits; False when it cannot."""
        droppable = [
            t
            for t in reversed(terms)
            if owners.get(normalise(t)) not in (None, *self.protected) and t not in self.added
        ]
        kept = list(terms)
        drops: list[str] = []
        while len(_join([*kept, extra])) > cap:
            if len(drops) == len(droppable):
                return False
            drops.append(droppable[len(drops)])
            kept.remove(drops[-1])
        for dropped in drops:
            terms.remove(dropped)
            self.changes.append(
                f"Dropped '{dropped}' (added in an earlier round) to stay in {cap} characters"
            )
        return True

    def insert_phrase(self, phrase: str) -> bool:
        """Put ``phrase`` right after the subject, behind this round's earlier insertions."""
        if not self._make_room(self.prompt, _PHRASE_OWNER, PROMPT_MAX_CHARS, phrase):
            return False
        self.prompt.insert(min(1 + self.inserted, len(self.prompt)), phrase)
        self.inserted += 1
        self.added.add(phrase)
        return True

    def bring_forward(self, phrase: str) -> bool:
        """Move an existing term to the front of this round's insertions (earlier weighs more)."""
        target = min(1 + self.inserted, len(self.prompt) - 1)
        index = next(
            (i for i, t in enumerate(self.prompt) if normalise(t) == normalise(phrase)), None
        )
        if index is None or index <= target:
            return False
        self.prompt.insert(target, self.prompt.pop(index))
        self.inserted += 1
        self.added.add(self.prompt[target])
        return True

    def add_negatives(self, wanted: list[str]) -> list[str]:
        done: list[str] = []
        for term in wanted:
            if self._make_room(self.negative, _NEGATIVE_OWNER, NEGATIVE_MAX_CHARS, term):
                self.negative.append(term)
                self.added.add(term)
                done.append(term)
        return done

    def fit(self) -> None:
        """Trim an over-long parent (a manual version, say) from its end."""
        for terms, cap, name in (
            (self.prompt, PROMPT_MAX_CHARS, "prompt"),
            (self.negative, NEGATIVE_MAX_CHARS, "negative prompt"),
        ):
            while len(_join(terms)) > cap and len(terms) > 1:
                dropped = terms.pop()
                self.changes.append(
                    f"Dropped '{dropped}' from the {name} to stay in {cap} characters"
                )
            if terms and len(terms[0]) > cap:
                terms[0] = terms[0][:cap].rsplit(" ", 1)[0].strip() or terms[0][:cap]
                self.changes.append(f"Cut the {name} to {cap} characters")


def _quoted(examples: tuple[str, ...]) -> str:
    return "; ".join(f'"{sanitize_comment(e, 120)}"' for e in examples)


def comment_count(count: int) -> str:
    """The count in words: '1 comment', '3 comments'."""
    return f"{count} comment" + ("" if count == 1 else "s")


def _cited(complaint: Complaint) -> str:
    return (
        f"'{complaint.label}' came up in {comment_count(complaint.count)} on low-rated options "
        f"({_quoted(complaint.examples)})"
    )


def _summary(analysis: Analysis) -> str:
    samples = len({o.sample_number for o in analysis.samples})
    if analysis.average_rating is None:
        head = f"No option in the last {samples} samples used {analysis.parent_version}"
    else:
        head = (
            f"{analysis.parent_version} averaged {analysis.average_rating:.2f}/5 over the last "
            f"{samples} samples"
        )
    apis = ", ".join(f"{api} {mean:.2f}" for api, mean in analysis.per_api.items())
    return f"{head} ({apis})." if apis else f"{head}."


class HeuristicEvolver:
    """Rules from complaints in low-rated comments to prompt and negative-prompt edits.

    Deterministic: the same analysis gives the same proposal. With no complaint to answer it
    stresses what well-rated comments praised, else adds a photorealism cue the prompt lacks.
    """

    name = "heuristic"

    async def propose(self, analysis: Analysis) -> Proposal:
        return self.propose_now(analysis)

    def propose_now(self, analysis: Analysis) -> Proposal:
        draft = _Draft(analysis, {c.key for c in analysis.complaints})
        reasons = [_summary(analysis)]
        answered = 0
        for complaint in analysis.complaints:
            if answered == COMPLAINTS_ACTED_ON:
                break
            done = self._answer(draft, complaint)
            if done:
                answered += 1
                reasons.append(f"{_cited(complaint)}: {done}.")
        if not answered:
            # Every edit the table has for these complaints is in already: weigh them more.
            for complaint in analysis.complaints[:COMPLAINTS_ACTED_ON]:
                done = self._emphasise(draft, complaint)
                if done:
                    reasons.append(f"{_cited(complaint)}: {done}.")
        if not draft.added:
            reasons.append(self._strengthen(draft, analysis, complained=bool(analysis.complaints)))
        draft.fit()
        if normalise(_join(draft.prompt)) == normalise(analysis.parent_prompt):
            reasons.append(self._reorder(draft))
        return Proposal(
            prompt=_join(draft.prompt),
            negative_prompt=_join(draft.negative),
            changes=tuple(draft.changes),
            reasoning=" ".join(reasons),
            origin="heuristic",
        )

    def _answer(self, draft: _Draft, complaint: Complaint) -> str:
        """Add the complaint's next prompt phrase and negative terms; what was done, in words."""
        rule = RULES_BY_KEY[complaint.key]
        why = f"{complaint.label}: {comment_count(complaint.count)}"
        done: list[str] = []
        phrase = next((p for p in rule.prompt_phrases if not _contains(draft.prompt, p)), None)
        if phrase is not None and draft.insert_phrase(phrase):
            draft.changes.append(f"Added '{phrase}' to the prompt ({why})")
            done.append(f"the prompt now asks for '{phrase}'")
        wanted = [t for t in rule.negative_terms if not _contains(draft.negative, t)]
        banned = draft.add_negatives(wanted[:NEGATIVES_PER_COMPLAINT])
        if banned:
            listed = ", ".join(f"'{t}'" for t in banned)
            draft.changes.append(f"Added {listed} to the negative prompt ({why})")
            done.append(f"the negative prompt now rules out {listed}")
        return " and ".join(done)

    def _emphasise(self, draft: _Draft, complaint: Complaint) -> str:
        rule = RULES_BY_KEY[complaint.key]
        present = next((p for p in rule.prompt_phrases if _contains(draft.prompt, p)), None)
        if present is None or not draft.bring_forward(present):
            return ""
        why = f"{complaint.label}: {comment_count(complaint.count)}"
        draft.changes.append(f"Moved '{present}' nearer the front of the prompt ({why})")
        return f"every edit for it is in the prompt already, so '{present}' moved forward"

    def _strengthen(self, draft: _Draft, analysis: Analysis, *, complained: bool) -> str:
        praise: Counter[str] = Counter()
        quotes: dict[str, list[str]] = {}
        for option in analysis.samples:
            if option.rating > LOW_RATING and option.comments:
                for key in detect_praise(sanitize_comment(option.comments, COMMENT_READ_LIMIT)):
                    praise[key] += 1
                    quotes.setdefault(key, []).append(sanitize_comment(option.comments, 120))
        order = {rule.key: i for i, rule in enumerate(RULES)}
        none = (
            "No new edit for those complaints is left in the rule table or fits the prompt"
            if complained
            else "No complaint recurred in the low-rated comments"
        )
        for key, count in sorted(praise.items(), key=lambda kv: (-kv[1], order[kv[0]])):
            rule = RULES_BY_KEY[key]
            phrase = next((p for p in rule.prompt_phrases if not _contains(draft.prompt, p)), None)
            if phrase is not None and draft.insert_phrase(phrase):
                examples = tuple(dict.fromkeys(quotes[key]))[:2]
                draft.changes.append(
                    f"Added '{phrase}' to the prompt to stress what well-rated options were "
                    f"praised for ({comment_count(count)})"
                )
                return (
                    f"{none}; the well-rated options were praised for what '{rule.label}' is "
                    f"about in {comment_count(count)} ({_quoted(examples)}), so the prompt "
                    f"stresses it with '{phrase}'."
                )
        for phrase in REINFORCEMENTS:
            if not _contains(draft.prompt, phrase) and draft.insert_phrase(phrase):
                draft.changes.append(f"Added '{phrase}' to the prompt (photorealism reinforcement)")
                return (
                    f"{none} and no quality stood out in the well-rated ones, so the prompt adds "
                    f"a photorealism cue it did not have yet: '{phrase}'."
                )
        return f"{none}, and every cue of the rule table is already in the prompt."

    def _reorder(self, draft: _Draft) -> str:
        """The last resort for a prompt that could take no edit: move its last term forward."""
        if len(draft.prompt) >= 2 and normalise(draft.prompt[-1]) != normalise(draft.prompt[1]):
            term = draft.prompt.pop()
            draft.prompt.insert(1, term)
            draft.changes.append(f"Moved '{term}' to follow the subject of the prompt")
            return f"No phrase could be added, so '{term}' moved forward to weigh more."
        draft.prompt.append(REINFORCEMENTS[0])
        draft.changes.append(f"Added '{REINFORCEMENTS[0]}' to the prompt")
        return f"The prompt had a single term, so '{REINFORCEMENTS[0]}' was added."

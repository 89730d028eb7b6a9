"""(Over 300 lines: most of it is the table itself, one rule per complaint.)

The complaint rule table: what trainers complain about, how their comments say it, and how
the heuristic evolver edits the prompt and the negative prompt for each complaint.

Detection works on lower-cased comments, one clause at a time (clauses end at punctuation and
at "but"/"and"/"though"), so that "good depth, but too dark" is a darkness complaint and not a
depth one. A cue preceded in its clause by a negator ("not too dark", "doesn't look flat") does
not count. Praise cues are read from well-rated comments when nothing is complained about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLAUSE_BREAK = re.compile(r"[,.;:!?()\[\]\n]+|\s+(?:but|and|though|although|while|yet)\s+")
_NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "isn't",
        "isnt",
        "wasn't",
        "wasnt",
        "aren't",
        "arent",
        "doesn't",
        "doesnt",
        "don't",
        "dont",
        "didn't",
        "didnt",
        "hardly",
        "without",
    }
)
_NEGATION_WINDOW = 3  # words before a cue, within its clause, that may negate it


@dataclass(frozen=True)
class Cue:
    """A regular expression that shows a complaint, unless its clause matches ``unless``."""

    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Rule:
    """One complaint category and the edits that answer it (most important edit first)."""

    key: str
    label: str
    cues: tuple[Cue, ...]
    praise: re.Pattern[str]
    prompt_phrases: tuple[str, ...]
    negative_terms: tuple[str, ...]


def _cue(pattern: str, unless: str | None = None) -> Cue:
    return Cue(re.compile(pattern), re.compile(unless) if unless else None)


_W = r"(?:[\w'-]+\s+)"  # one word and its trailing space

RULES: tuple[Rule, ...] = (
    Rule(
        key="render_look",
        label="looks like a render / CGI / fake",
        cues=(
            _cue(r"\b3d\b"),
            _cue(r"\brender(?:ed|ing|s)?\b"),
            _cue(r"\bcgi\b"),
            _cue(r"\bcartoon(?:ish|y)?\b"),
            _cue(r"\bvideo ?game\b"),
            _cue(r"\b(?:computer|ai)[- ]generated\b"),
            _cue(r"\b(?:illustration|painting|painted|drawing)\b"),
            _cue(r"\bunrealistic\b"),
            _cue(r"\bnot\s+(?:very\s+|really\s+)?(?:photo-?)?realistic\b"),
            _cue(r"\b(?:fake|unreal|synthetic|artificial)\b", unless=r"light|glow|textur|plastic"),
        ),
        praise=re.compile(r"\b(?:photo-?realis(?:tic|m)|realistic|looks real|real photo)"),
        prompt_phrases=(
            "authentic photograph captured on a real camera",
            "real-world materials with subtle natural imperfections and wear",
            "natural lens characteristics with slight vignetting",
        ),
        negative_terms=(
            "rendered look",
            "unreal engine",
            "octane render",
            "video game graphics",
            "digital art",
            "overly perfect surfaces",
            "airbrushed",
        ),
    ),
    Rule(
        key="flat",
        label="flat / no depth",
        cues=(
            _cue(r"\bflat\b", unless=r"\bflat[- ]?(?:screen|tv|roof|pack|weave)\b"),
            _cue(
                rf"\b(?:no|lacks?|lacking|little|poor|without|missing)\s+{_W}?(?:depth|dimension)"
            ),
            _cue(rf"\b(?:depth|dimension)\s+{_W}?(?:missing|lacking|off|wrong|poor|weak)\b"),
            _cue(r"\b2d\b|\btwo-dimensional\b|\blifeless\b"),
        ),
        praise=re.compile(
            rf"\b(?:good|great|nice|excellent|perfect|real|realistic|lovely|amazing)\s+{_W}?"
            r"(?:depth|dimension|perspective)"
        ),
        prompt_phrases=(
            "pronounced sense of depth with distinct foreground and background layers",
            "directional light that models form with gentle shadow gradients",
            "three-dimensional spatial perspective",
        ),
        negative_terms=("flat image", "lack of depth", "two-dimensional look", "flat lighting"),
    ),
    Rule(
        key="artificial_lighting",
        label="artificial / unnatural lighting",
        cues=(
            _cue(
                r"\b(?:artificial|fake|harsh|unnatural|weird|strange|odd|cold|sterile|clinical)"
                rf"\s+{_W}?(?:light|lighting|lights|glow)\b"
            ),
            _cue(
                r"\blight(?:ing|s)?\s+(?:[\w'-]+\s+){0,2}"
                r"(?:artificial|fake|harsh|unnatural|weird|wrong|off|strange|odd)\b"
            ),
            _cue(r"\bstudio light"),
        ),
        praise=re.compile(
            r"\b(?:good|great|nice|excellent|perfect|natural|realistic|lovely|beautiful|soft)"
            rf"\s+{_W}?(?:light|lighting|daylight)\b"
        ),
        prompt_phrases=(
            "soft natural window light with realistic falloff",
            "light sources motivated by the windows and visible fixtures",
            "gentle ambient bounce light",
        ),
        negative_terms=(
            "studio lighting",
            "unnatural light sources",
            "artificial glow",
            "uniform flat lighting",
        ),
    ),
    Rule(
        key="too_dark",
        label="too dark / underexposed",
        cues=(
            _cue(
                r"\b(?:too|very|so|overly|quite|really|bit|rather)\s+"
                r"(?:dark|dim|gloomy|murky|moody)\b"
            ),
            _cue(r"\bunder-?exposed\b|\bgloomy\b|\bmurky\b"),
            _cue(r"\b(?:dark|dim)\s+(?:image|photo|picture|room|result|overall)\b"),
            _cue(r"\bcrushed\s+(?:blacks|shadows)\b"),
        ),
        praise=re.compile(r"\b(?:bright|well[- ]exposed|airy|well[- ]lit)\b"),
        prompt_phrases=(
            "bright well-exposed interior with open shadows",
            "abundant daylight filling the room",
            "balanced exposure that keeps shadow detail",
        ),
        negative_terms=("underexposed", "dark image", "gloomy atmosphere", "murky shadows"),
    ),
    Rule(
        key="too_bright",
        label="too bright / washed out",
        cues=(
            _cue(r"\b(?:too|very|so|overly)\s+(?:bright|light|white|pale)\b"),
            _cue(r"\bover-?exposed\b|\bwashed[- ]?out\b|\bblown[- ]?out\b|\bglare\b"),
            _cue(r"\bblown\s+(?:highlights|windows)\b|\bfaded\b"),
        ),
        praise=re.compile(r"\b(?:good|nice|great|balanced|perfect)\s+(?:exposure|contrast)\b"),
        prompt_phrases=(
            "controlled highlights with detail kept in windows and white surfaces",
            "rich midtones and natural contrast",
        ),
        negative_terms=("overexposed", "washed out", "blown-out windows", "low contrast", "glare"),
    ),
    Rule(
        key="colors_off",
        label="colours off",
        cues=(
            _cue(
                r"\bcolou?r(?:s|ing)?\s+(?:[\w'-]+\s+){0,2}"
                r"(?:off|wrong|weird|strange|odd|unnatural|muddy|dull|inaccurate)\b"
            ),
            _cue(
                r"\b(?:wrong|weird|strange|odd|unnatural|off|muddy|dull|inaccurate)\s+colou?rs?\b"
            ),
            _cue(r"\bcolou?r\s+(?:cast|shift)\b|\btint(?:ed)?\b|\bwhite balance\b"),
            _cue(r"\b(?:yellow|green|blue|orange|pink|magenta)(?:ish)?\s+(?:cast|hue)\b"),
        ),
        praise=re.compile(
            r"\b(?:good|great|nice|accurate|natural|true|perfect|lovely|beautiful)\s+colou?rs?\b"
        ),
        prompt_phrases=(
            "true-to-life color rendition with neutral white balance",
            "accurate paint and fabric colors as seen in daylight",
        ),
        negative_terms=("color cast", "color shift", "unnatural colors", "tinted image"),
    ),
    Rule(
        key="oversaturated",
        label="oversaturated / garish colours",
        cues=(
            _cue(r"\bover-?saturated\b|\bgarish\b"),
            _cue(r"\b(?:too|very|so|overly)\s+(?:saturated|colou?rful|vivid|vibrant|intense)\b"),
            _cue(
                r"\bcolou?rs?\s+(?:[\w'-]+\s+){0,2}(?:too\s+)?"
                r"(?:strong|intense|loud|punchy|saturated)\b"
            ),
        ),
        praise=re.compile(r"\b(?:subtle|muted|restrained|calm)\s+(?:palette|colou?rs?|tones)\b"),
        prompt_phrases=(
            "natural restrained color saturation",
            "subtle palette true to the materials",
        ),
        negative_terms=("garish colors", "hdr look", "vivid color grading", "neon colors"),
    ),
    Rule(
        key="blurry",
        label="blurry / soft",
        cues=(
            _cue(r"\bblurr?(?:y|ed|iness)?\b|\bout of focus\b|\bunfocused\b|\bfuzzy\b"),
            _cue(
                r"\b(?:too\s+|very\s+)?soft\b",
                unless=r"\bsoft\s+(?:light|lighting|shadows?|glow|tones?|colou?rs?|furnish"
                r"|fabrics?|textures?|cushions?|touch|palette)",
            ),
            _cue(r"\bnot\s+(?:very\s+|really\s+)?sharp\b|\blacks?\s+(?:detail|sharpness)\b"),
            _cue(r"\blow[- ]res(?:olution)?\b|\bpixelated\b|\bsmudged?\b|\bsmeared\b"),
        ),
        praise=re.compile(r"\b(?:sharp|crisp|detailed)\b|\bgreat detail"),
        prompt_phrases=(
            "tack-sharp focus across the room",
            "crisp fine detail in textures and edges",
            "high-resolution capture",
        ),
        negative_terms=("soft focus", "out of focus", "motion blur", "low resolution", "smudged"),
    ),
    Rule(
        key="noisy",
        label="noisy / grainy / artefacts",
        cues=(
            _cue(r"\b(?:noisy|grainy|noise|pixel noise)\b"),
            _cue(r"\b(?:artifacts?|artefacts?|banding|compression)\b"),
        ),
        praise=re.compile(r"\bclean\s+(?:image|photo|picture|result)\b"),
        prompt_phrases=("clean low-noise image at base ISO", "smooth tonal gradations"),
        negative_terms=("grainy", "sensor noise", "compression artifacts", "color banding"),
    ),
    Rule(
        key="distorted_geometry",
        label="distorted geometry / warped lines",
        cues=(
            _cue(
                r"\b(?:distorted|distortion|warped|warping|bent|bending|crooked|wonky|skewed"
                r"|wavy|melted|melting|deformed|tilted)\b"
            ),
            _cue(
                r"\b(?:lines|walls|verticals|edges|furniture|windows|ceiling|perspective)\s+"
                r"(?:[\w'-]+\s+){0,2}(?:curved|bent|wrong|tilted|leaning|crooked|wavy)\b"
            ),
            _cue(r"\bfish-?eye\b"),
        ),
        praise=re.compile(r"\bstraight\s+(?:lines|verticals|walls)\b|\b(?:good|accurate) geometry"),
        prompt_phrases=(
            "architecturally accurate geometry with perfectly straight lines",
            "true verticals from a level camera",
            "correctly proportioned furniture",
        ),
        negative_terms=(
            "lens distortion",
            "fisheye",
            "bent walls",
            "curved lines",
            "melted furniture",
            "deformed objects",
        ),
    ),
    Rule(
        key="clutter",
        label="cluttered / messy",
        cues=(
            _cue(r"\bclutter(?:ed|y)?\b|\bmessy\b|\bchaotic\b|\bcrowded\b"),
            _cue(r"\btoo\s+busy\b|\btoo\s+many\s+(?:objects|things|items|props)\b"),
            _cue(r"\b(?:extra|random)\s+(?:objects|furniture|items|stuff|props)\b"),
        ),
        praise=re.compile(r"\b(?:clean|tidy|minimal|uncluttered)\b"),
        prompt_phrases=(
            "clean minimal styling with intentional decor only",
            "orderly composition with breathing room",
        ),
        negative_terms=("clutter", "messy room", "random objects", "extra furniture"),
    ),
    Rule(
        key="plastic",
        label="plastic / waxy textures",
        cues=(
            _cue(r"\bplastic(?:ky|y)?\b|\bwaxy\b"),
            _cue(r"\b(?:too\s+|very\s+|overly\s+)(?:shiny|glossy|smooth)\b"),
            _cue(
                r"\b(?:textures?|materials?)\s+(?:[\w'-]+\s+){0,2}"
                r"(?:fake|flat|smooth|wrong|off|missing|bland)\b"
            ),
            _cue(r"\b(?:fake|smooth|missing|bland)\s+(?:textures?|materials?)\b|\bno\s+texture"),
        ),
        praise=re.compile(
            rf"\b(?:good|great|nice|realistic|rich|lovely)\s+{_W}?(?:textures?|materials?)\b"
        ),
        prompt_phrases=(
            "tactile material textures with natural variation",
            "fine surface detail in wood linen and stone",
            "matte and satin finishes where appropriate",
        ),
        negative_terms=("plastic textures", "waxy surfaces", "glossy plastic sheen"),
    ),
    Rule(
        key="layout_changed",
        label="room or layout changed from the original",
        cues=(
            _cue(
                r"\b(?:changed|altered|moved|removed|added|replaced|different)\s+"
                r"(?:[\w'-]+\s+){0,2}(?:layout|furniture|windows?|structure|walls?|room)\b"
            ),
            _cue(r"\b(?:does\s*n[o']t|did\s*n[o']t)\s+match\b|\bnot the same room\b"),
            _cue(r"\b(?:layout|structure|room)\s+(?:is\s+|was\s+)?(?:changed|different|altered)"),
        ),
        praise=re.compile(r"\b(?:faithful|true)\s+to\s+the\s+(?:original|room|layout)\b"),
        prompt_phrases=("faithful to the original room layout and furniture placement",),
        negative_terms=("altered layout", "extra windows", "changed architecture"),
    ),
)

RULES_BY_KEY: dict[str, Rule] = {rule.key: rule for rule in RULES}

# Generic photorealism reinforcements, used in order when no complaint recurs and nothing
# in the well-rated comments says what to stress.
REINFORCEMENTS: tuple[str, ...] = (
    "indistinguishable from a real photograph",
    "editorial interior photograph for an architecture magazine",
    "natural interplay of light and shadow",
    "realistic ambient occlusion in corners and under furniture",
    "accurate real-world scale and proportions",
    "crisp architectural details",
    "authentic lived-in material imperfections",
    "professional real estate photography",
)


def _clauses(comment: str) -> list[str]:
    return [c.strip() for c in _CLAUSE_BREAK.split(comment.lower()) if c.strip()]


def _negated(clause: str, start: int) -> bool:
    before = clause[:start].split()[-_NEGATION_WINDOW:]
    return any(word in _NEGATORS for word in before)


def _shows(clause: str, pattern: re.Pattern[str]) -> bool:
    return any(not _negated(clause, m.start()) for m in pattern.finditer(clause))


def detect_complaints(comment: str) -> tuple[str, ...]:
    """The keys of the complaints ``comment`` makes, in rule-table order."""
    found: list[str] = []
    clauses = _clauses(comment)
    for rule in RULES:
        for clause in clauses:
            if any(
                _shows(clause, cue.pattern) and not (cue.unless and cue.unless.search(clause))
                for cue in rule.cues
            ):
                found.append(rule.key)
                break
    return tuple(found)


def detect_praise(comment: str) -> tuple[str, ...]:
    """The keys of the categories ``comment`` praises (e.g. "good depth" → ``flat``)."""
    clauses = _clauses(comment)
    return tuple(
        rule.key for rule in RULES if any(_shows(clause, rule.praise) for clause in clauses)
    )

"""The gateway's JSON request bodies (``../shared/API.md``, "Gateway")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# The options a trainer rates (the gateway reads its list of options from here).
Option = Literal["A", "B"]


class OptionRating(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # not ``Option``: the option, the rating's range and the comment's length are checked by the
    # gateway's rules, which answer with their own error codes (unknown_option, ...)
    option: str
    image_id: StrictInt | None = None
    rating: StrictInt
    comments: str = ""


class RateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment_id: str = Field(min_length=1, max_length=64)
    ratings: list[OptionRating] = Field(min_length=1, max_length=10)


# --- Response bodies. Keys that API.md leaves out in some cases (an option's ``error`` or
# ``url``, active mode's figures) are optional here and serialised with ``exclude_unset``:
# a key the flow never set stays absent, a key set to None is a null.


class ImageRef(BaseModel):
    image_id: int
    url: str


class SlotRef(BaseModel):
    """The A/B test slot an upload took: which test, which slot, which arm's version."""

    id: int
    slot: int
    arm: Literal["old", "new"]


class TrainOption(BaseModel):
    option: Option
    api: str
    prompt_version: str
    parameters: dict[str, float | int]
    strategy: str
    predicted_rating: float | None = None  # active mode only
    uncertainty: float | None = None  # active mode only
    image_id: int | None = None  # rendered
    provider: str
    url: str | None = None  # rendered
    error: dict[str, Any] | None = None  # failed: the error body's ``error``


class TrainResponse(BaseModel):
    """``POST /api/enhance/train``."""

    experiment_id: str
    project_id: str
    mode: Literal["ab", "active"]
    prompt_version: str
    ab_test: SlotRef | None
    original: ImageRef
    options: list[TrainOption]
    candidates: int | None = None  # active mode only


class ABTestArmView(BaseModel):
    """One prompt version's side of an A/B test: samples, ratings, their mean."""

    n: int
    ratings: int
    mean: float | None


class ABTestView(BaseModel):
    """An A/B test of a new prompt version against the current one, as the API shows it."""

    id: int
    old: str
    new: str
    status: Literal["running", "decided", "cancelled"]
    samples: int
    of: int
    avg: dict[str, float | None]  # per version name (old first): ``versions[...].mean``
    versions: dict[str, ABTestArmView]
    winner: str | None
    p_new_better: float | None
    promoted: bool | None
    evolution_sample: int | None
    note: str | None
    created_at: str | None  # ISO 8601 as Python writes it (see ``HistoryItem``)
    decided_at: str | None


class RatePromptEvolution(BaseModel):
    triggered: bool
    waiting_for_ab_test: bool
    new_version: str | None
    ab_test: ABTestView | None


class RateResponse(BaseModel):
    """``POST /api/train/rate``; stored with the experiment and answered again as it was."""

    success: bool
    ml_updated: bool
    sample_number: int
    current_best_rating: float | None
    samples_collected: int
    phase_1_complete: bool
    prompt_evolution: RatePromptEvolution


class ApiStatus(BaseModel):
    samples: int
    avg_rating: float | None
    best_rating: int | None
    best_parameters: dict[str, Any] | None  # the ML service's best, else the best rated
    predicted_best_rating: float | None
    uncertainty: float | None
    importance: dict[str, float] | None


class PromptStatus(BaseModel):
    version: str
    performance_score: float | None
    usage_count: int


class EvolutionRound(BaseModel):
    sample: int
    status: str
    evolver: str | None
    new_version: str | None
    fallback_reason: str | None
    error: str | None


class EvolutionStatus(BaseModel):
    last_round: EvolutionRound | None
    waiting_for_ab_test: bool


class CurvePoint(BaseModel):
    sample: int
    avg_rating: float
    best_so_far: float


class MLServiceStatus(BaseModel):
    reachable: bool
    pending_updates: int
    busy: bool
    queued_computations: int


class PredictionError(BaseModel):
    sample: int
    option: Option
    api: str
    predicted: float
    actual: int
    error: float


class RewardModelStatus(BaseModel):
    trained: bool
    version: str | None
    samples: int
    pairwise_accuracy: float | None
    mae: float | None
    prediction_errors: list[PredictionError]
    mean_abs_error: float | None


class StatusResponse(BaseModel):
    """``GET /api/train/status``."""

    samples_collected: int
    phase: Literal[1, 2]
    phase_1_complete: bool
    phase_1_target: int
    current_best_rating: float | None
    per_api: dict[str, ApiStatus]
    current_prompt: PromptStatus | None
    ab_test: ABTestView | None  # the running test
    prompt_evolution: EvolutionStatus
    learning_curve: list[CurvePoint]
    ml_service: MLServiceStatus
    reward_model: RewardModelStatus


class HistoryOption(BaseModel):
    option: Option
    api: str
    provider: str | None
    image_id: int
    url: str
    parameters: dict[str, Any] | None
    strategy: str | None
    rating: int | None
    comments: str


class HistoryItem(BaseModel):
    experiment_id: str
    project_id: str | None
    mode: str
    prompt_version: str
    # ISO 8601 as Python writes it (``+00:00``), kept as text: pydantic would write ``Z``
    created_at: str
    created_by: str | None
    sample_number: int | None
    rated_at: str | None
    rated_by: str | None
    rated_by_name: str | None
    original: ImageRef
    options: list[HistoryOption]


class HistoryPage(BaseModel):
    """``GET /api/train/history``."""

    items: list[HistoryItem]
    next_cursor: str | None


class EnhanceResponse(BaseModel):
    """``POST /api/enhance``: the chosen render of the best learned API and parameters."""

    image_id: int
    url: str
    original: ImageRef
    project_id: str
    api: str
    provider: str
    parameters: dict[str, Any]
    prompt_version: str
    predicted_rating: float | None
    uncertainty: float | None
    candidates: int
    ranked_by: Literal["reward_model", "optimizer"]


class PromptVersionView(BaseModel):
    """``GET /api/prompts/{version}`` and each item of ``GET /api/prompts``."""

    version: str
    parent_version: str | None
    prompt: str
    negative_prompt: str
    performance_score: float | None
    usage_count: int
    created_at: str  # ISO 8601 as Python writes it (see ``HistoryItem``)
    is_current: bool
    status: Literal["candidate", "testing", "active", "retired", "rejected"]
    origin: Literal["seed", "llm", "heuristic", "manual"]
    changes: list[str]
    reasoning: str | None


class PromptLibrary(BaseModel):
    """``GET /api/prompts``: every version, oldest first."""

    current: str | None
    items: list[PromptVersionView]


class Promotion(BaseModel):
    """``POST /api/prompts/{version}/promote``; ``ab_test`` is the test it cancelled."""

    current: str
    previous: str | None
    changed: bool
    ab_test: ABTestView | None


class ABTestList(BaseModel):
    """``GET /api/ab_tests``: newest first."""

    items: list[ABTestView]


class UserView(BaseModel):
    """``GET /api/me`` and each item of ``GET /api/users``."""

    id: int
    name: str
    role: Literal["trainer", "admin"]
    created_at: str  # ISO 8601 as Python writes it (see ``HistoryItem``)
    disabled: bool


class UserList(BaseModel):
    items: list[UserView]


def response_json(body: BaseModel) -> dict[str, Any]:
    """A response model as the JSON object the gateway answers with."""
    return body.model_dump(mode="json", exclude_unset=True)

"""The ML service's request and response bodies (``../shared/API.md``, "ML service")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

StudyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ApiName = Annotated[str, Field(min_length=1, max_length=64)]
Strategy = Literal["sobol", "gp", "explore", "fallback"]
# the seconds a caller of the ML service will still wait; queued GP work is dropped after it
DEADLINE_HEADER = "X-Request-Deadline"
MAX_IMAGE_B64 = 2_000_000  # a 512 px JPEG is ~50-150 kB; base64 adds a third


MAX_SUGGESTIONS_PER_API = 16
SuggestionCount = Annotated[int, Field(ge=1, le=MAX_SUGGESTIONS_PER_API)]


class SuggestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apis: list[ApiName] = Field(min_length=1, max_length=16)
    study: StudyName = "default"
    # distinct suggestions per API, from one batch: one number for every API, or per API
    count: SuggestionCount | dict[ApiName, SuggestionCount] = 1

    def counts(self) -> dict[str, int]:
        if isinstance(self.count, int):
            return dict.fromkeys(self.apis, self.count)
        return dict(self.count)


class Suggestion(BaseModel):
    suggestion_id: str
    api: str
    strategy: Strategy
    parameters: dict[str, float | int]


class SuggestResponse(BaseModel):
    suggestions: list[Suggestion]
    n_observations: dict[str, int]


class ObservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observation_id: str = Field(min_length=1, max_length=200)
    suggestion_id: str | None = Field(default=None, max_length=100)
    api: ApiName
    parameters: dict[str, float | int]
    # Range is checked by the service so that it answers with its own error code.
    rating: StrictInt
    prompt_version: str | None = Field(default=None, max_length=64)
    # Phase 2 (optional): the rendered image and its original, downscaled JPEG (<= 512 px) in
    # base64; the service stores their features for the reward model, not the images.
    image_b64: str | None = Field(default=None, max_length=MAX_IMAGE_B64)
    original_b64: str | None = Field(default=None, max_length=MAX_IMAGE_B64)
    # The upload both options share; default: observation_id up to its last ':'.
    group_id: str | None = Field(default=None, min_length=1, max_length=200)

    def group(self) -> str:
        return self.group_id or self.observation_id.rsplit(":", 1)[0]


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observations: list[ObservationIn] = Field(min_length=1, max_length=500)
    study: StudyName = "default"


class BestForApi(BaseModel):
    parameters: dict[str, float | int] | None
    predicted_rating: float | None
    uncertainty: float | None
    n_observations: int
    source: Literal["model", "observed", "none"]
    # How much each parameter matters to the model, 0..1 (1: the most); None until a GP is fitted
    importance: dict[str, float] | None = None
    # GET /ml/best never waits behind GP work: with the GP busy it serves the last model's answer.
    # fitted_observations: the observations that model saw; model_age_seconds: how long ago.
    fitted_observations: int | None = None
    model_age_seconds: float | None = None


class UpdateResponse(BaseModel):
    updated: bool
    n_observations: dict[str, int]
    best: dict[str, BestForApi]


class BestResponse(BaseModel):
    study: str
    best: dict[str, BestForApi]


class StudyDeleted(BaseModel):
    deleted: str


class SearchSpaceParameter(BaseModel):
    name: str
    type: Literal["float", "int"]
    bounds: list[float | int]  # [low, high]; integers for an "int" parameter


class SearchSpaceResponse(BaseModel):
    search_space: dict[str, list[SearchSpaceParameter]]


class GPState(BaseModel):
    """The GP queue of the process that answered: ``processes`` (worker slots) or ``inline``."""

    mode: Literal["processes", "inline"]
    workers: int
    running: int
    queued: int
    queue_limit: int
    dropped: int
    refused: int
    completed: int


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    database: str  # "ok" or "unreachable: <why>"
    apis: list[str]
    n_observations: int
    models: dict[str, int]  # "study/api" -> observations the cached model was fitted on
    gp: GPState


class RewardTrainResponse(BaseModel):
    study: str
    version: str
    n_samples: int
    # held-out quality (None when the held-out split had nothing to measure)
    n_train: int
    n_test: int
    pairwise_accuracy: float | None
    mae: float | None
    pairs_tested: int


class RewardScore(BaseModel):
    id: str
    predicted_rating: float
    uncertainty: float


class RewardScoreResponse(BaseModel):
    study: str
    version: str
    scores: list[RewardScore]


class RewardStatusResponse(BaseModel):
    study: str
    trained: bool
    version: str | None
    trained_at: str | None  # ISO 8601
    samples: int
    samples_with_features: int
    pairwise_accuracy: float | None
    mae: float | None
    metrics: dict[str, float | int | None] | None
    feature_version: str

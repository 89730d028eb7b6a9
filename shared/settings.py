"""Typed settings for both services, read once from the environment.

Nothing else in the project reads ``os.environ``. Every field is documented in the README's
settings table; ``latina settings`` prints the values in force.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that have a development default. In production each must be set to something else.
DEV_SECRET_KEY = "latina-dev-secret-key-change-me"  # noqa: S105 (refused in production)
DEV_ML_SERVICE_TOKEN = "latina-dev-ml-token"  # noqa: S105 (refused in production)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a service on this machine (an empty host or ``0.0.0.0``
    binds every interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class SettingsError(ValueError):
    """A setting is missing or unsafe; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    # --- general
    latina_env: Literal["local", "production"] = "local"
    latina_data_dir: Path = Path("./.latina")
    latina_secret_key: str = DEV_SECRET_KEY
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # On AWS: settings (secrets above all) are read from SSM parameters under this path.
    latina_ssm_prefix: str | None = None

    # --- database
    database_url: str | None = None
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=10, ge=1)
    database_command_timeout: float = Field(default=30.0, gt=0)
    migrate_on_start: bool | None = None  # None: yes in local mode, no in production

    # --- gateway
    gateway_host: str = "127.0.0.1"
    # /metrics: unset, served to loopback callers only; set, to callers bearing this token
    metrics_token: str | None = None
    gateway_port: int = 8000
    public_base_url: str | None = None
    upload_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    upload_max_pixels: int = Field(default=40_000_000, gt=0)
    json_max_bytes: int = Field(default=1024 * 1024, gt=0)
    # per user, on /api/enhance/train and /api/enhance (0: no limit)
    render_rate_per_minute: int = Field(default=30, ge=0)
    paid_renders_per_day: int = Field(default=300, ge=0)
    # the largest rendered image downloaded from an image API's URL
    download_max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    phase_1_target: int = Field(default=50, ge=1)
    session_max_age_seconds: int = Field(default=12 * 3600, ge=60)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: float = Field(default=900.0, gt=0)

    # --- ML service
    ml_service_url: str = "http://127.0.0.1:8001"
    ml_service_token: str = DEV_ML_SERVICE_TOKEN
    ml_service_timeout: float = Field(default=10.0, gt=0)
    # token: bearer token only; iam: requests are also SigV4-signed (an AWS_IAM function URL)
    # and the token travels in X-Latina-Service-Token.
    ml_service_auth: Literal["token", "iam"] = "token"
    aws_region: str = "us-east-1"  # on Lambda, AWS_REGION is set by the runtime
    ml_delivery_timeout: float = Field(default=3.0, gt=0)
    ml_delivery_retry_delay: float = Field(default=10.0, ge=0)
    gateway_worker: bool = True
    # scheduled worker on Lambda: stop picking jobs this long before the function's deadline
    worker_stop_margin_seconds: float = Field(default=60.0, ge=0)
    ml_send_images: bool = True
    reward_retrain_every: int = Field(default=25, ge=1)
    enhance_candidates: int = Field(default=3, ge=1, le=20)
    enhance_max_paid_candidates: int = Field(default=2, ge=1, le=20)
    render_concurrency: int = Field(default=2, ge=1)
    active_candidates: int = Field(default=10, ge=2, le=40)
    active_max_paid_candidates: int = Field(default=2, ge=1, le=40)
    active_selection: Literal["best_and_uncertain", "top2"] = "best_and_uncertain"
    ml_study: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    ml_host: str = "127.0.0.1"
    ml_port: int = 8001
    torch_num_threads: int = Field(default=1, ge=1)
    search_space_file: Path | None = None
    ml_initial_samples: int = Field(default=5, ge=1)
    ml_pending_ttl_seconds: float = Field(default=1800.0, gt=0)
    # under load (others wait for the same API, or GP work is queued), a suggestion computed
    # when the API had at most this many fewer observations is handed out rather than waited for
    ml_stale_suggestion_observations: int = Field(default=20, ge=0)
    # how long a suggest waits for a computation on today's data (another caller's, or the
    # background one after an update) before it takes a ready one a few observations old
    ml_suggest_patience_seconds: float = Field(default=0.5, ge=0)
    ml_large_study: int = Field(default=300, ge=10)
    # the largest request body the ML service reads (updates carry downscaled images)
    ml_request_max_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    # GP fits and acquisitions: 0 = inline (one at a time in a thread of the service), N = N
    # worker processes; unset = inline on Lambda, else one process per core (at most 4)
    ml_gp_workers: int | None = Field(default=None, ge=0, le=64)
    ml_gp_queue_limit: int = Field(default=32, ge=1)
    # image features (ML updates with images, reward scores): 0 = in a thread of the service,
    # N = N worker processes; unset = inline on Lambda, else one process per core (at most 4)
    ml_image_workers: int | None = Field(default=None, ge=0, le=64)
    aws_lambda_function_name: str | None = None
    reward_model_bucket: str = "latina-models"
    reward_members: int = Field(default=5, ge=1)
    reward_epochs: int = Field(default=200, ge=1)

    # --- image APIs
    leonardo_api_key: str | None = None
    leonardo_base_url: str = "https://cloud.leonardo.ai/api/rest/v1"
    leonardo_timeout: float = Field(default=30.0, gt=0)
    leonardo_model_id: str = "b24e16ff-06e3-43eb-8d33-4416c2d75876"
    leonardo_controlnet_preprocessor_id: int = 20
    leonardo_deadline_seconds: float = Field(default=180.0, gt=0)
    leonardo_poll_interval: float = Field(default=2.0, gt=0)
    replicate_api_token: str | None = None
    replicate_base_url: str = "https://api.replicate.com"
    replicate_model: str = "stability-ai/sdxl"
    replicate_timeout: float = Field(default=60.0, gt=0)
    replicate_wait_seconds: int = Field(default=60, ge=1, le=60)
    replicate_deadline_seconds: float = Field(default=180.0, gt=0)
    replicate_poll_interval: float = Field(default=1.0, gt=0)
    replicate_controlnet_input: str | None = None

    # --- prompt evolution and A/B tests
    evolution_every: int = Field(default=10, ge=1)
    evolution_window: int = Field(default=10, ge=1)
    ab_test_samples: int = Field(default=5, ge=2)
    ab_slot_ttl_seconds: float = Field(default=3600.0, gt=0)
    prompt_export: Literal["local", "s3", "none"] = "local"
    prompt_export_dir: Path | None = None
    prompt_export_bucket: str | None = None
    prompt_export_prefix: str = "prompts/"

    # --- LLM
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0)
    openai_attempts: int = Field(default=2, ge=1)

    # --- object storage
    object_store: Literal["local", "s3"] = "local"
    object_url_ttl_seconds: int = Field(default=3600, ge=3600)
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_uploads_bucket: str = "latina-uploads"
    s3_enhanced_bucket: str = "latina-leonardo-images"
    s3_create_buckets: bool = False

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.latina_env != "production":
            return self
        problems: list[str] = []
        if self.latina_secret_key in ("", DEV_SECRET_KEY) or len(self.latina_secret_key) < 32:
            problems.append("LATINA_SECRET_KEY must be set to a random value of 32+ characters")
        if self.ml_service_token in ("", DEV_ML_SERVICE_TOKEN) or len(self.ml_service_token) < 24:
            problems.append("ML_SERVICE_TOKEN must be set to a random value of 24+ characters")
        if not self.database_url:
            problems.append("DATABASE_URL must be set (the embedded database is for local mode)")
        if problems:
            raise SettingsError("production settings refused: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _dev_secrets_stay_on_loopback(self) -> Settings:
        """A service reachable from other machines must not run on a secret everyone knows,
        in local mode too."""
        problems = []
        if not is_loopback(self.gateway_host) and self.latina_secret_key == DEV_SECRET_KEY:
            problems.append(
                f"GATEWAY_HOST={self.gateway_host} is reachable from other machines: set"
                " LATINA_SECRET_KEY (the development key signs sessions anyone could forge)"
            )
        if not is_loopback(self.ml_host) and self.ml_service_token == DEV_ML_SERVICE_TOKEN:
            problems.append(
                f"ML_HOST={self.ml_host} is reachable from other machines: set"
                " ML_SERVICE_TOKEN (the development token is public)"
            )
        if problems:
            raise SettingsError("settings refused: " + "; ".join(problems))
        return self

    @property
    def is_local(self) -> bool:
        return self.latina_env == "local"

    @property
    def should_migrate_on_start(self) -> bool:
        if self.migrate_on_start is None:
            return self.is_local
        return self.migrate_on_start

    @property
    def data_dir(self) -> Path:
        return self.latina_data_dir.expanduser().resolve()


class _ParameterSource(BaseSettings):
    """Where the settings come from, read before anything is validated: a deployed function's
    environment holds no secret, so ``Settings`` validated on the environment alone would
    refuse production before SSM had a say."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    latina_ssm_prefix: str | None = None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use; with
    ``LATINA_SSM_PREFIX`` the SSM parameters under it override the environment. The production
    rules (no development secret, a database URL) hold for the merged result."""
    prefix = _ParameterSource().latina_ssm_prefix
    if not prefix:
        return Settings()
    from shared.aws.parameters import read_parameters

    return settings_with_parameters(read_parameters(prefix))


def settings_with_parameters(values: dict[str, Any]) -> Settings:
    """The environment's settings with ``values`` (setting name -> value) taking precedence."""
    known = {name: value for name, value in values.items() if name in Settings.model_fields}
    return Settings(**known)

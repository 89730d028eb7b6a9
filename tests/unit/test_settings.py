"""Settings: typed, read from the environment, strict in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings


def test_local_mode_runs_on_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.is_local and settings.database_url is None
    assert settings.should_migrate_on_start
    assert settings.s3_uploads_bucket == "latina-uploads"
    assert settings.s3_enhanced_bucket == "latina-leonardo-images"


def test_settings_come_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_SERVICE_URL", "http://ml.internal:9000")
    monkeypatch.setenv("UPLOAD_MAX_BYTES", "1024")
    monkeypatch.setenv("OBJECT_STORE", "s3")
    settings = Settings()
    assert settings.ml_service_url == "http://ml.internal:9000"
    assert settings.upload_max_bytes == 1024
    assert settings.object_store == "s3"


@pytest.mark.parametrize(
    ("missing", "env"),
    [
        ("LATINA_SECRET_KEY", {"ML_SERVICE_TOKEN": "t" * 40, "DATABASE_URL": "postgresql://x/y"}),
        ("ML_SERVICE_TOKEN", {"LATINA_SECRET_KEY": "s" * 40, "DATABASE_URL": "postgresql://x/y"}),
        ("DATABASE_URL", {"LATINA_SECRET_KEY": "s" * 40, "ML_SERVICE_TOKEN": "t" * 40}),
    ],
)
def test_production_refuses_default_or_missing_secrets_and_names_them(
    monkeypatch: pytest.MonkeyPatch, missing: str, env: dict[str, str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LATINA_ENV", "production")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert missing in str(info.value)
    assert not any(k in str(info.value) for k in env if k != missing and k != "DATABASE_URL")


def test_production_starts_with_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATINA_ENV", "production")
    monkeypatch.setenv("LATINA_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("ML_SERVICE_TOKEN", "t" * 40)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal/latina")
    settings = Settings()
    assert not settings.is_local
    assert not settings.should_migrate_on_start


def test_signed_urls_must_live_at_least_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJECT_URL_TTL_SECONDS", "60")
    with pytest.raises(ValidationError, match="object_url_ttl_seconds"):
        Settings()


@pytest.mark.parametrize(
    ("name", "host", "refused"),
    [
        ("GATEWAY_HOST", "0.0.0.0", "LATINA_SECRET_KEY"),  # noqa: S104 (what is refused)
        ("GATEWAY_HOST", "192.168.1.20", "LATINA_SECRET_KEY"),
        ("ML_HOST", "0.0.0.0", "ML_SERVICE_TOKEN"),  # noqa: S104
        ("ML_HOST", "::", "ML_SERVICE_TOKEN"),
    ],
)
def test_dev_secrets_are_refused_when_a_service_binds_beyond_loopback(
    monkeypatch: pytest.MonkeyPatch, name: str, host: str, refused: str
) -> None:
    monkeypatch.setenv(name, host)
    with pytest.raises(ValidationError, match=f"{name}={host}.*{refused}"):
        Settings()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_dev_secrets_are_fine_on_loopback(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("GATEWAY_HOST", host)
    monkeypatch.setenv("ML_HOST", host)
    assert Settings().gateway_host == host


def test_real_secrets_may_bind_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOST", "0.0.0.0")  # noqa: S104
    monkeypatch.setenv("ML_HOST", "0.0.0.0")  # noqa: S104
    monkeypatch.setenv("LATINA_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("ML_SERVICE_TOKEN", "t" * 30)
    assert Settings().ml_host == "0.0.0.0"  # noqa: S104

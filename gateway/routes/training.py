"""Training routes: upload and render, rate, status, history."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.adapters.ml_client import HttpMLClient
from gateway.auth import current_user
from gateway.domain.limits import RenderLimits
from gateway.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from gateway.flows.enhance import EnhancePolicy, enhance
from gateway.flows.history import training_history
from gateway.flows.rating import RatingPolicy, record_ratings
from gateway.flows.status import training_status
from gateway.flows.training import ActivePolicy, TrainingDeps, train
from gateway.state import GatewayState, gateway_state
from shared.web_json import read_json
from shared.wire.gateway import RateRequest, response_json

MULTIPART_OVERHEAD = 64 * 1024
# The routes that take an upload (multipart): their body limit is UPLOAD_MAX_BYTES plus the
# multipart overhead; every other route's is JSON_MAX_BYTES.
UPLOAD_PATHS = ("/api/enhance/train", "/api/enhance")


def _ml(state: GatewayState) -> HttpMLClient:
    return HttpMLClient(state.upstreams.ml, study=state.settings.ml_study)


async def _upload(
    request: Request, limit: int
) -> tuple[bytes, str | None, str | None, dict[str, str]]:
    """The multipart ``image`` (bytes, filename, declared type) and the text fields."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(
            f"upload is larger than {limit} bytes",
            code="upload_too_large",
            details={"limit_bytes": limit},
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise MalformedRequest("send the image as multipart/form-data (field 'image')")
    async with request.form(max_files=1, max_fields=10) as form:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise InvalidInput(
                "the multipart field 'image' (a file) is required", code="image_required"
            )
        data = await image.read(limit + 1)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return data, image.filename, image.content_type, fields


def _deps(state: GatewayState) -> TrainingDeps:
    return TrainingDeps(
        uows=state.uows,
        store=state.store,
        ml=_ml(state),
        providers=state.providers,
        space=state.search_space,
        uploads_bucket=state.settings.s3_uploads_bucket,
        enhanced_bucket=state.settings.s3_enhanced_bucket,
        max_bytes=state.settings.upload_max_bytes,
        max_pixels=state.settings.upload_max_pixels,
        url_ttl=state.settings.object_url_ttl_seconds,
        ab_slot_ttl=state.settings.ab_slot_ttl_seconds,
        limits=RenderLimits(
            per_minute=state.settings.render_rate_per_minute,
            paid_per_day=state.settings.paid_renders_per_day,
        ),
        active=ActivePolicy(
            candidates=state.settings.active_candidates,
            max_paid=state.settings.active_max_paid_candidates,
            concurrency=state.settings.render_concurrency,
            selection=state.settings.active_selection,
            phase_1_target=state.settings.phase_1_target,
        ),
    )


async def enhance_train(request: Request) -> Response:
    user = current_user(request)
    state = gateway_state(request)
    data, filename, declared_type, fields = await _upload(request, state.settings.upload_max_bytes)
    body = await train(
        _deps(state),
        data,
        fields.get("project_id"),
        fields.get("mode"),
        user,
        filename=filename,
        declared_type=declared_type,
    )
    return JSONResponse(response_json(body), status_code=201)


async def enhance_production(request: Request) -> Response:
    """``POST /api/enhance``: the best learned API, parameters and prompt (API.md)."""
    user = current_user(request)
    state = gateway_state(request)
    data, _, _, fields = await _upload(request, state.settings.upload_max_bytes)
    body = await enhance(
        _deps(state),
        EnhancePolicy(
            candidates=state.settings.enhance_candidates,
            max_paid_candidates=state.settings.enhance_max_paid_candidates,
            concurrency=state.settings.render_concurrency,
        ),
        data,
        fields.get("project_id"),
        user,
    )
    return JSONResponse(response_json(body), status_code=201)


async def rate(request: Request) -> Response:
    user = current_user(request)
    state = gateway_state(request)
    raw = await read_json(request)
    body = await record_ratings(
        state.uows,
        _ml(state),
        RateRequest.model_validate(raw),
        user,
        RatingPolicy(
            phase_1_target=state.settings.phase_1_target,
            delivery_timeout=state.settings.ml_delivery_timeout,
            retry_delay=state.settings.ml_delivery_retry_delay,
            evolution_every=state.settings.evolution_every,
            reward_retrain_every=state.settings.reward_retrain_every,
        ),
        state.exporter,
        send_images=state.settings.ml_send_images,
    )
    return JSONResponse(response_json(body))


async def status(request: Request) -> Response:
    current_user(request)
    state = gateway_state(request)
    body = await training_status(
        state.uows, _ml(state), phase_1_target=state.settings.phase_1_target
    )
    return JSONResponse(response_json(body))


async def history(request: Request) -> Response:
    current_user(request)
    state = gateway_state(request)
    q = request.query_params
    raw_limit = q.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
        raise InvalidInput("limit must be an integer from 1 to 200", code="invalid_limit")
    body = await training_history(
        state.uows,
        state.store,
        limit=int(raw_limit),
        cursor=q.get("cursor"),
        project_id=q.get("project_id") or None,
        url_ttl=state.settings.object_url_ttl_seconds,
        trainer=q.get("trainer") or None,
        min_rating=_rating_bound(q.get("min_rating"), "min_rating"),
        max_rating=_rating_bound(q.get("max_rating"), "max_rating"),
    )
    return JSONResponse(response_json(body))


def _rating_bound(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 5:
        raise InvalidInput(f"{name} must be an integer from 1 to 5", code="invalid_rating_filter")
    return int(raw)

"""The pieces the training and enhance flows share: upload checks, render requests, the paid-call
guard, the candidates' split, the image rows, and stored objects removed when an upload fails."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.domain.images import ValidatedImage
from gateway.errors import InvalidInput, UnsupportedMediaType
from gateway.flows.training.candidates import candidates_per_api
from gateway.flows.training.deps import ActivePolicy
from gateway.flows.training.records import all_or_nothing, original_row, rendered_row
from gateway.flows.training.rendering import render_request, within_cost_guard
from gateway.flows.training.uploads import (
    check_declared_type,
    check_mode,
    check_project,
    extension_for,
)
from gateway.providers.base import ProviderName, RenderRequest, RenderResult
from gateway.repositories.prompts import PromptVersion

IMAGE = ValidatedImage(b"png-bytes", "image/png", "png", 640, 480, "PNG")
RESULT = RenderResult(b"jpeg-bytes!", "image/jpeg", 640, 480, "leonardo", {"generation": "g1"})


@dataclass
class Provider:
    name: ProviderName

    async def render(self, request: RenderRequest) -> RenderResult:
        raise AssertionError("not rendered in these tests")


@dataclass
class Store:
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)

    async def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.objects[(bucket, key)] = data

    async def delete(self, bucket: str, key: str) -> None:
        del self.objects[(bucket, key)]


def test_a_missing_project_is_the_default_one_and_a_bad_one_is_refused() -> None:
    assert check_project(None) == "default"
    assert check_project("kitchen-2.a_b") == "kitchen-2.a_b"
    with pytest.raises(InvalidInput) as refused:
        check_project("no spaces/or slashes")
    assert refused.value.code == "invalid_project_id"


def test_an_empty_mode_leaves_the_choice_to_the_system_and_an_unknown_one_is_refused() -> None:
    assert check_mode(None) is None
    assert check_mode("") is None
    assert check_mode("active") == "active"
    with pytest.raises(InvalidInput) as refused:
        check_mode("random")
    assert refused.value.code == "unsupported_mode"


def test_a_name_or_declared_type_that_contradicts_the_bytes_is_refused() -> None:
    check_declared_type("image/png", "room.PNG", "image/png")
    check_declared_type("image/png", "room", "application/octet-stream")  # nothing claimed
    with pytest.raises(UnsupportedMediaType) as by_name:
        check_declared_type("image/png", "room.jpg", None)
    assert by_name.value.code == "image_type_mismatch"
    with pytest.raises(UnsupportedMediaType):
        check_declared_type("image/png", None, "image/webp")


def test_stored_images_get_the_extension_of_their_type() -> None:
    assert extension_for("image/jpeg") == "jpg"
    assert extension_for("image/webp") == "webp"
    assert extension_for("image/unknown") == "png"


def test_a_render_request_carries_the_upload_the_prompt_and_a_copy_of_the_parameters() -> None:
    parameters = {"init_strength": 0.4, "guidance_scale": 7}
    prompt = PromptVersion(3, "v3", "photorealistic interior", "cartoon")
    request = render_request("leonardo", IMAGE, prompt, parameters, seed=42)
    assert request == RenderRequest(
        api="leonardo",
        image=b"png-bytes",
        content_type="image/png",
        width=640,
        height=480,
        prompt="photorealistic interior",
        negative_prompt="cartoon",
        parameters=parameters,
        seed=42,
    )
    assert request.parameters is not parameters


def test_paid_apis_render_at_most_max_paid_and_the_local_engine_as_many_as_wanted() -> None:
    assert within_cost_guard(Provider("leonardo"), 5, max_paid=2) == 2
    assert within_cost_guard(Provider("replicate"), 1, max_paid=2) == 1
    assert within_cost_guard(Provider("local"), 5, max_paid=2) == 5


def test_candidates_are_split_over_the_apis_under_the_cost_guard() -> None:
    providers = {"leonardo": Provider("leonardo"), "stable_diffusion": Provider("local")}
    policy = ActivePolicy(candidates=10, max_paid=2)
    assert candidates_per_api(providers, policy) == {"leonardo": 2, "stable_diffusion": 5}
    local = {"leonardo": Provider("local"), "stable_diffusion": Provider("local")}
    assert candidates_per_api(local, ActivePolicy(candidates=3)) == {
        "leonardo": 1,
        "stable_diffusion": 1,
    }


def test_image_rows_keep_the_format_or_provider_metadata_and_add_what_the_flow_says() -> None:
    original = original_row("p", "uploads", "originals/k.png", IMAGE, purpose="enhance")
    assert (original.image_type, original.bucket, original.key) == (
        "original",
        "uploads",
        "originals/k.png",
    )
    assert (original.byte_size, original.width, original.height) == (9, 640, 480)
    assert original.metadata == {"format": "PNG", "purpose": "enhance"}
    rendered = rendered_row("p", "enhanced", "enhanced/k.jpg", RESULT, api="leonardo")
    assert (rendered.image_type, rendered.content_type, rendered.byte_size) == (
        "enhanced",
        "image/jpeg",
        11,
    )
    assert rendered.metadata == {"provider": {"generation": "g1"}, "api": "leonardo"}


async def test_objects_stored_for_a_failed_upload_are_removed_again() -> None:
    store = Store()
    with pytest.raises(RuntimeError):
        async with all_or_nothing(store) as objects:  # type: ignore[arg-type]
            await objects.original("uploads", IMAGE)
            await objects.rendered("enhanced", RESULT)
            assert len(store.objects) == 2
            raise RuntimeError("the database went away")
    assert store.objects == {}


async def test_objects_stored_for_a_recorded_upload_stay() -> None:
    store = Store()
    async with all_or_nothing(store) as objects:  # type: ignore[arg-type]
        original = await objects.original("uploads", IMAGE)
        rendered = await objects.rendered("enhanced", RESULT)
    assert original.startswith("originals/") and original.endswith(".png")
    assert rendered.startswith("enhanced/") and rendered.endswith(".jpg")
    assert store.objects == {
        ("uploads", original): b"png-bytes",
        ("enhanced", rendered): b"jpeg-bytes!",
    }

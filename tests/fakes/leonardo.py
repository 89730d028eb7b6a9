"""A fake Leonardo.ai REST v1 (``shared/REFERENCE.md``), with init images in a real S3 server.

``POST /init-image`` answers a presigned POST (``generate_presigned_post``) into the session's
SeaweedFS, which checks the policy, signature and expiry of the upload for real. A generation
reads the uploaded init image back from S3 and "generates" ``derived_image`` of it at the
requested size, served by the fake itself like Leonardo's CDN (no credentials needed).

API routes live under ``/api/rest/v1`` (serve, then use ``<base>/api/rest/v1`` as base URL):
``POST /init-image``, ``POST /generations``, ``GET /generations/{id}``; and the CDN route
``GET /cdn/{name}``. Knobs beyond ``FakeApi``'s: ``polls_before_complete``,
``fail_generation``, ``credit_cost``, ``upload_expires``, ``max_upload_bytes``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tests.fakes import FakeApi, derived_image
from tests.s3_server import S3Server, sync_client

PREFIX = "/api/rest/v1"
API_KEY = "leonardo-test-key"  # the bearer token the fake requires by default
EXTENSIONS = {"png", "jpg", "jpeg", "webp"}


@dataclass
class Generation:
    id: str
    request: dict[str, Any]
    image_name: str
    polls: int = 0


class FakeLeonardo(FakeApi):
    """Leonardo's image-to-image API with configurable behaviour (see the module docstring).

    Attributes:
        polls_before_complete: Status polls that answer PENDING before COMPLETE.
        fail_generation: Generations end FAILED instead of COMPLETE.
        credit_cost: ``apiCreditCost`` of every generation.
        init_images: Init image id → S3 key, for every ``/init-image`` answered.
        generations: Generation id → what was asked and how often it was polled.
        images: CDN name → generated PNG bytes.
    """

    def __init__(
        self,
        s3: S3Server,
        *,
        bucket: str = "fake-leonardo-init-images",
        token: str | None = API_KEY,
        polls_before_complete: int = 0,
        fail_generation: bool = False,
        credit_cost: int = 9,
        upload_expires: int = 120,
        max_upload_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        super().__init__(token)
        self.s3 = sync_client(s3)
        self.bucket = bucket
        self.polls_before_complete = polls_before_complete
        self.fail_generation = fail_generation
        self.credit_cost = credit_cost
        self.upload_expires = upload_expires
        self.max_upload_bytes = max_upload_bytes
        self.init_images: dict[str, str] = {}
        # where the answers point, when a test makes Leonardo hostile (default: S3, this fake)
        self.upload_url: str | None = None
        self.cdn_base: str | None = None
        self.generations: dict[str, Generation] = {}
        self.images: dict[str, bytes] = {}
        self._bucket_ready = False
        api = [
            Route("/init-image", self._init_image, methods=["POST"]),
            Route("/generations", self._create_generation, methods=["POST"]),
            Route("/generations/{id}", self._get_generation, methods=["GET"]),
        ]
        self.app = Starlette(
            routes=[Mount(PREFIX, routes=api), Route("/cdn/{name}", self._cdn, methods=["GET"])]
        )

    def error(self, status: int, message: str) -> Response:
        return JSONResponse({"error": message, "path": "$", "code": "fake-error"}, status)

    def uploaded(self, init_image_id: str) -> bytes:
        """The bytes S3 holds for an init image (raises ``ClientError`` when not uploaded)."""
        key = self.init_images[init_image_id]
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def _ensure_bucket(self) -> None:
        try:
            self.s3.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    async def _init_image(self, request: Request) -> Response:
        if early := await self.gate(request, "POST /init-image"):
            return early
        extension = (await request.json()).get("extension")
        if extension not in EXTENSIONS:
            return self.error(400, f"extension must be one of {sorted(EXTENSIONS)}")
        if not self._bucket_ready:
            await asyncio.to_thread(self._ensure_bucket)
            self._bucket_ready = True
        init_id = str(uuid.uuid4())
        key = f"init/{init_id}.{extension}"
        post = self.s3.generate_presigned_post(
            self.bucket,
            key,
            Conditions=[["content-length-range", 1, self.max_upload_bytes]],
            ExpiresIn=self.upload_expires,
        )
        self.init_images[init_id] = key
        return JSONResponse(
            {
                "uploadInitImage": {
                    "id": init_id,
                    "url": self.upload_url or post["url"],
                    "fields": json.dumps(post["fields"]),  # a JSON string, as Leonardo does
                    "key": key,
                }
            }
        )

    async def _create_generation(self, request: Request) -> Response:
        if early := await self.gate(request, "POST /generations"):
            return early
        body = await request.json()
        problem = _invalid_generation(body, self.init_images)
        if problem:
            return self.error(400, problem)
        try:
            source = await asyncio.to_thread(self.uploaded, body["init_image_id"])
        except ClientError:
            return self.error(400, "init image was never uploaded")
        image = await asyncio.to_thread(derived_image, source, (body["width"], body["height"]))
        generation = Generation(str(uuid.uuid4()), body, f"{uuid.uuid4().hex}.png")
        self.generations[generation.id] = generation
        self.images[generation.image_name] = image
        return JSONResponse(
            {
                "sdGenerationJob": {
                    "generationId": generation.id,
                    "apiCreditCost": self.credit_cost,
                }
            }
        )

    async def _get_generation(self, request: Request) -> Response:
        if early := await self.gate(request, "GET /generations/{id}"):
            return early
        generation = self.generations.get(request.path_params["id"])
        if generation is None:
            return JSONResponse({"generations_by_pk": None})
        generation.polls += 1
        if self.fail_generation:
            status = "FAILED"
        elif generation.polls <= self.polls_before_complete:
            status = "PENDING"
        else:
            status = "COMPLETE"
        images = []
        if status == "COMPLETE":
            base = self.cdn_base or str(request.base_url).rstrip("/")
            url = f"{base}/cdn/{generation.image_name}"
            images = [{"id": str(uuid.uuid4()), "url": url, "nsfw": False}]
        asked = generation.request
        return JSONResponse(
            {
                "generations_by_pk": {
                    "id": generation.id,
                    "status": status,
                    "generated_images": images,
                    "modelId": asked["modelId"],
                    "prompt": asked["prompt"],
                    "imageWidth": asked["width"],
                    "imageHeight": asked["height"],
                    "guidanceScale": asked["guidance_scale"],
                    "initStrength": asked["init_strength"],
                    "seed": asked.get("seed"),
                }
            }
        )

    async def _cdn(self, request: Request) -> Response:
        if early := await self.gate(request, "GET /cdn/{name}", auth=False):
            return early
        image = self.images.get(request.path_params["name"])
        if image is None:
            return Response(status_code=404)
        return Response(image, media_type="image/png")


def _invalid_generation(body: Any, init_images: dict[str, str]) -> str | None:
    """What is wrong with a ``POST /generations`` body by the documented limits, or None."""
    if not isinstance(body, dict):
        return "body must be an object"
    if not isinstance(body.get("prompt"), str) or not isinstance(body.get("modelId"), str):
        return "prompt and modelId are required strings"
    for side in ("width", "height"):
        value = body.get(side)
        if type(value) is not int or value % 8 or not 8 <= value <= 1536:
            return f"{side} must be a multiple of 8, at most 1536"
    if type(body.get("guidance_scale")) is not int or not 1 <= body["guidance_scale"] <= 20:
        return "guidance_scale must be an integer in 1..20"
    if type(body.get("num_images")) is not int or not 1 <= body["num_images"] <= 8:
        return "num_images must be in 1..8"
    strength = body.get("init_strength")
    if not isinstance(strength, int | float) or not 0.1 <= strength <= 0.9:
        return "init_strength must be in 0.1..0.9"
    if body.get("init_image_id") not in init_images:
        return "unknown init_image_id"
    for controlnet in body.get("controlnets") or []:
        if controlnet.get("initImageType") not in ("UPLOADED", "GENERATED"):
            return "controlnets[].initImageType must be UPLOADED or GENERATED"
        if controlnet.get("initImageId") not in init_images:
            return "controlnets[].initImageId is unknown"
        if type(controlnet.get("preprocessorId")) is not int:
            return "controlnets[].preprocessorId must be an integer"
        if ("weight" in controlnet) == ("strengthType" in controlnet):
            return "controlnets[] takes weight or strengthType, not both or neither"
    return None

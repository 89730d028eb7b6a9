"""A whole training cycle on the packaged functions, through their function URLs and events."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.fakes.openai import structured
from tests.images import interior
from tests.rehearsal import runbook
from tests.rehearsal.conftest import Deployment, operator_environment

COMMENT = "looks like a 3d render, the lighting is artificial"
LLM_ANSWER = {
    "improved_prompt": (
        "professional interior photograph taken on a real camera, soft natural window light, "
        "true-to-life materials, straight verticals"
    ),
    "negative_prompt": "3d render, cgi, cartoon, harsh artificial lighting",
    "changes": ["asked for a real camera", "asked for natural window light"],
    "reasoning": "Trainers said the images looked like renders with artificial light.",
}


def tokens_in(output: str) -> list[str]:
    """The API tokens ``latina users create`` / ``token`` printed, in order."""
    return [line for line in output.splitlines() if line.startswith("lat_")]


async def upload(client: httpx.AsyncClient, project: str) -> dict[str, Any]:
    response = await client.post(
        "/api/enhance/train",
        files={"image": ("room.jpg", interior(), "image/jpeg")},
        data={"project_id": project},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def rate(client: httpx.AsyncClient, body: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    values = {"A": a, "B": b}
    response = await client.post(
        "/api/train/rate",
        json={
            "experiment_id": body["experiment_id"],
            "ratings": [
                {"option": o["option"], "rating": values[o["option"]], "comments": COMMENT}
                for o in body["options"]
            ],
        },
    )
    assert response.status_code == 200, response.text
    rated: dict[str, Any] = response.json()
    return rated


async def scheduled_worker_delivers(stage: Deployment) -> None:
    """Runs of the worker's schedule (compressed to a second apart) until no ML update is
    queued: one becomes due ML_DELIVERY_RETRY_DELAY after its failed attempt."""
    for _ in range(30):
        report = await stage.invoke("worker", stage.schedule)
        if report["queued_after"].get("ml_update", 0) == 0:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"the worker did not deliver the queued ML update: {report}")


async def test_a_whole_training_cycle_runs_on_the_packaged_functions(stage: Deployment) -> None:
    # the deploy step: the migrate function creates the schema, and a second run changes nothing
    migrated = await stage.invoke("migrate", {})
    assert migrated["applied"] and migrated["changed_after_applied"] == []
    again = await stage.invoke("migrate", {})
    assert again["applied"] == [] and again["already_applied"] == len(migrated["applied"])

    # the first admin and a trainer, by the runbook's commands (settings from SSM)
    operator = operator_environment(
        stage.ssm_url, ADMIN_PASSWORD="admin-password-1", TRAINER="tina"
    )
    created = await runbook.run("first-users", {**operator, "TRAINER_PASSWORD": "tina-password-1"})
    admin_token, trainer_token = tokens_in(created)

    stage.fakes.openai.queue(structured(LLM_ANSWER))
    trainer = httpx.AsyncClient(
        base_url=stage.gateway_url,
        headers={"Authorization": f"Bearer {trainer_token}"},
        timeout=180,
    )
    gateway_url = stage.gateway_url + "/"  # as the stack's output gives it
    # the runbook's smoke test
    assert '"status"' in await runbook.run("smoke", {"GatewayUrl": gateway_url})
    async with trainer, httpx.AsyncClient(timeout=60) as plain:
        # sample 1 while the ML function is throttled: the upload falls back to space-filling
        # parameters, the rating is acknowledged and its ML update waits in the queue
        stage.ml_front.throttled = True
        first = await upload(trainer, "villa-1")
        assert {o["strategy"] for o in first["options"]} == {"fallback"}
        rated = await rate(trainer, first, 2, 3)
        assert rated["success"] is True and rated["ml_updated"] is False
        status = (await trainer.get("/api/train/status")).json()
        assert status["ml_service"]["pending_updates"] >= 1
        stage.ml_front.throttled = False

        # the scheduled worker (the template's event) delivers it once it is due
        # (ML_DELIVERY_RETRY_DELAY after the failed attempt): runs of the schedule, compressed
        await scheduled_worker_delivers(stage)
        status = (await trainer.get("/api/train/status")).json()
        assert status["ml_service"]["reachable"] is True
        assert status["ml_service"]["pending_updates"] == 0

        # samples 2..10 through both image APIs, parameters from the ML function (signed calls)
        for sample in range(2, 11):
            body = await upload(trainer, f"villa-{sample}")
            a, b = body["options"]
            assert (a["provider"], b["provider"]) == ("leonardo", "replicate"), body
            assert a["strategy"] != "fallback" and b["strategy"] != "fallback", body
            for option in (a, b):
                image = await plain.get(option["url"])  # a presigned S3 URL
                assert image.status_code == 200 and image.content
            rated = await rate(trainer, body, 2 + sample % 3, 1 + sample % 4)
            assert rated["ml_updated"] is True and rated["sample_number"] == sample
        assert rated["prompt_evolution"]["triggered"] is True  # the 10th sample
        assert stage.ml_front.accepted > 0 and stage.ml_front.refused == 0

        # the worker runs the evolution round: the LLM writes v1.0.1, an A/B test starts
        await stage.invoke("worker", stage.schedule)
        library = (await trainer.get("/api/prompts")).json()
        assert [v["version"] for v in library["items"]] == ["v1.0.0", "v1.0.1"]
        assert library["items"][1]["origin"] == "llm"
        assert library["items"][1]["prompt"] == LLM_ANSWER["improved_prompt"]
        tests = (await trainer.get("/api/ab_tests")).json()["items"]
        assert tests[0]["new"] == "v1.0.1" and tests[0]["status"] == "running"
        exported = stage.s3.list_objects_v2(Bucket=stage.buckets["PromptsBucket"])
        keys = {o["Key"] for o in exported.get("Contents", [])}
        assert any(key.endswith("v1.0.1.json") for key in keys), keys

        status = (await trainer.get("/api/train/status")).json()
        assert status["samples_collected"] == 10
        assert status["per_api"]["leonardo"]["samples"] == 10
        assert status["prompt_evolution"]["last_round"]["evolver"] == "llm"
        history = (await trainer.get("/api/train/history", params={"limit": 20})).json()
        assert len(history["items"]) == 10

        # an admin's view: the users
        admin = {"Authorization": f"Bearer {admin_token}"}
        users = await trainer.get("/api/users", headers=admin)
        assert {u["name"] for u in users.json()["items"]} == {"admin", "tina"}

    # the runbook's prompt rollback: the admin promotes v1.0.1 by hand, cancelling its test
    rollback = await runbook.run(
        "prompt-rollback",
        {"GatewayUrl": gateway_url, "ADMIN_TOKEN": admin_token, "VERSION": "v1.0.1"},
    )
    assert '"current":"v1.0.1"' in rollback.replace(" ", "")
    # the runbook's token rotation: the old token stops working, the new one works
    rotated = tokens_in(await runbook.run("user-tokens", operator))
    async with httpx.AsyncClient(base_url=stage.gateway_url, timeout=60) as client:
        old = await client.get("/api/me", headers={"Authorization": f"Bearer {trainer_token}"})
        assert old.status_code == 401
        new = await client.get("/api/me", headers={"Authorization": f"Bearer {rotated[0]}"})
        assert new.status_code == 200 and new.json()["name"] == "tina"
    # migrations by hand change nothing after the migrate function ran
    assert (await runbook.run("migrate-by-hand", operator)).startswith("0 applied")
    # the runbook's rotation of ML_SERVICE_TOKEN: put, recycle ml, then gateway and worker
    await runbook.run("rotate-ml-token", operator)
    await stage.functions["ml"].recycle()
    async with httpx.AsyncClient(
        base_url=stage.gateway_url,
        headers={"Authorization": f"Bearer {rotated[0]}"},
        timeout=180,
    ) as client:
        # in between: the ML service refuses the old token; the rating is kept for the worker
        between = await upload(client, "villa-rotation")
        assert {o["strategy"] for o in between["options"]} == {"fallback"}
        kept = await rate(client, between, 4, 4)
        assert kept["success"] is True and kept["ml_updated"] is False
        for name in ("gateway", "worker"):
            await stage.functions[name].recycle()
        await scheduled_worker_delivers(stage)
        status = (await client.get("/api/train/status")).json()
        assert status["ml_service"]["pending_updates"] == 0
        after = await upload(client, "villa-after-rotation")
        assert "fallback" not in {o["strategy"] for o in after["options"]}

    # every block of the runbook that can run here ran
    assert {b.run_as for b in runbook.blocks() if b.run_as} == runbook.RAN

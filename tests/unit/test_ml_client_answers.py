"""The ML client hands the gateway wire models, and a body that is not one is an upstream error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.adapters.ml_client import HttpMLClient
from gateway.errors import UpstreamError
from shared.wire.ml import BestForApi

BEST = {
    "study": "default",
    "best": {
        "leonardo": {
            "parameters": {"init_strength": 0.3, "steps": 30},
            "predicted_rating": 4.0,
            "uncertainty": None,
            "n_observations": 3,
            "source": "observed",
        }
    },
}


def client_answering(body: Any) -> HttpMLClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    return HttpMLClient(httpx.AsyncClient(transport=transport, base_url="http://ml"))


async def test_best_is_a_wire_model_that_keeps_ints_and_floats() -> None:
    best = (await client_answering(BEST).best()).best
    assert isinstance(best["leonardo"], BestForApi)
    assert best["leonardo"].parameters == {"init_strength": 0.3, "steps": 30}
    assert type(best["leonardo"].parameters["steps"]) is int  # type: ignore[index]


@pytest.mark.parametrize(
    "call",
    ["best", "health", "reward_status", "reward_train"],
)
async def test_a_body_that_is_not_the_wire_model_is_an_upstream_error(call: str) -> None:
    ml = client_answering({"best": {"leonardo": {"source": "guessed"}}})
    with pytest.raises(UpstreamError) as raised:
        await getattr(ml, call)()
    assert raised.value.upstream == "ml_service"
    assert "malformed" in raised.value.message

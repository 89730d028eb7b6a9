"""What an upstream's failure says to a trainer: its own short message, never its raw body."""

from __future__ import annotations

import json

import httpx

from gateway.providers.http import describe

KEYS = ("detail", "error")


def response(status: int, body: bytes, content_type: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": content_type})


def test_the_upstreams_own_message_is_used_and_cut() -> None:
    said = describe(
        response(422, b'{"detail": "' + b"bad input " * 100 + b'"}', "application/json"), KEYS
    )
    assert said.startswith("bad input") and len(said) <= 200


def test_a_raw_body_is_never_echoed() -> None:
    token = "r8_" + "z" * 20  # made here: no secret-looking literal in the repository
    leaked = f"<html>debug: Authorization: Bearer {token} env=prod</html>".encode()
    said = describe(response(500, leaked, "text/html"), KEYS)
    assert said == "HTTP 500"


def test_secrets_inside_a_message_are_redacted() -> None:
    # key-shaped strings made here, so that no secret-looking literal sits in the repository
    openai_like, replicate_like = "sk-" + "x" * 30, "r8_" + "y" * 20
    message = f"invalid key {openai_like} for Bearer {replicate_like}"
    body = json.dumps({"error": message}).encode()
    said = describe(response(401, body, "application/json"), KEYS)
    assert openai_like not in said and replicate_like not in said
    assert said.startswith("invalid key")


def test_control_characters_do_not_reach_the_message() -> None:
    said = describe(
        response(400, b'{"detail": "line one\\nline\\u0007 two"}', "application/json"), KEYS
    )
    assert said == "line one line two"

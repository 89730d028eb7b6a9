"""SigV4, verified the way an ``AWS_IAM`` function URL does, independently of botocore: the
integration tests put it in front of the ML app, the production rehearsal in front of the ML
function's URL."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote


@dataclass(frozen=True)
class Principal:
    """The keys a caller signs with (an IAM role's temporary credentials)."""

    key_id: str
    secret: str
    session_token: str | None  # None: requests must not carry one
    region: str


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_problem(
    principal: Principal,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> str | None:
    """None when the request carries a valid SigV4 signature of ``principal`` for the Lambda
    service in its region, else why not. ``headers`` are keyed in lower case."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "not signed"
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",")
    )
    key_id, date, region, service, terminal = fields["Credential"].split("/")
    if (key_id, region, service, terminal) != (
        principal.key_id,
        principal.region,
        "lambda",
        "aws4_request",
    ):
        return f"wrong scope {fields['Credential']}"
    if headers.get("x-amz-security-token") != principal.session_token:
        return "session token missing"
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and date must be signed"
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(parse_qsl(query, keep_blank_values=True))
    )
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/-_.~"),
            canonical_query,
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            headers["x-amz-date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    secret = f"AWS4{principal.secret}".encode()
    key = _hmac(_hmac(_hmac(_hmac(secret, date), region), service), terminal)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, fields["Signature"]) else "bad signature"

"""Sign outgoing httpx requests with AWS Signature Version 4 (IAM-authenticated function URLs).

The ML service's function URL uses ``AWS_IAM`` auth: only principals allowed to call
``lambda:InvokeFunctionUrl`` on it (the gateway's and the worker's roles) get through. The
signature covers the method, path, query, host, date and a hash of the body, so the body must be
in memory when the request is signed (it always is for the ML client's JSON requests).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx

# Hop-by-hop or transport-set headers that must not be signed: a proxy or httpx may change them.
_UNSIGNED = {"connection", "content-length", "user-agent", "accept-encoding", "expect"}


class SigV4Auth(httpx.Auth):
    """httpx auth that signs each request for ``service`` in ``region`` with boto's credentials.

    Credentials come from boto's chain (on Lambda: the function role's temporary keys, refreshed
    by botocore as they near expiry).
    """

    requires_request_body = True

    def __init__(self, region: str, service: str = "lambda", credentials: Any = None) -> None:
        if credentials is None:
            import botocore.session

            credentials = botocore.session.get_session().get_credentials()
            if credentials is None:
                raise RuntimeError("no AWS credentials found to sign requests to the ML service")
        self._credentials = credentials
        self._region = region
        self._service = service

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth as BotoSigV4
        from botocore.awsrequest import AWSRequest

        headers = {k: v for k, v in request.headers.items() if k.lower() not in _UNSIGNED}
        signable = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=headers
        )
        frozen = self._credentials.get_frozen_credentials()
        BotoSigV4(frozen, self._service, self._region).add_auth(signable)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            value = signable.headers.get(name)
            if value is not None:
                request.headers[name] = value
        yield request

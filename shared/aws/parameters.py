"""Settings kept in SSM Parameter Store, read once per Lambda container.

A deployed function gets ``LATINA_SSM_PREFIX`` (``/latina/<stage>/``) and nothing secret in its
environment; every parameter under the prefix whose last path segment names a setting
(``/latina/prod/DATABASE_URL``) is read with decryption when the settings are built, and wins over
the environment. Rotating a secret is a ``put-parameter`` and a fresh container (see
``infra/RUNBOOK.md``).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("latina.settings")


class ParameterStoreError(RuntimeError):
    """The parameters could not be read; the message says which prefix and why."""


def read_parameters(prefix: str, *, client: Any = None) -> dict[str, str]:
    """Every parameter directly under ``prefix``, by lower-cased last path segment.

    Args:
        prefix: A path such as ``/latina/prod/``; a missing trailing slash is added.
        client: A boto3 SSM client (tests); by default one from boto's credential chain.

    Raises:
        ParameterStoreError: SSM refused or could not be reached.
    """
    import boto3  # on Lambda only: the local stack never pays for importing boto3
    from botocore.exceptions import BotoCoreError, ClientError

    path = prefix if prefix.endswith("/") else prefix + "/"
    ssm = client or boto3.client("ssm")
    values: dict[str, str] = {}
    try:
        for page in ssm.get_paginator("get_parameters_by_path").paginate(
            Path=path, Recursive=False, WithDecryption=True
        ):
            for parameter in page["Parameters"]:
                name = parameter["Name"].rsplit("/", 1)[-1].lower()
                values[name] = parameter["Value"]
    except (BotoCoreError, ClientError) as exc:
        raise ParameterStoreError(f"cannot read SSM parameters under {path}: {exc}") from exc
    log.info("settings read from SSM", extra={"prefix": path, "names": sorted(values)})
    return values

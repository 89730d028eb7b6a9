"""Check what `serverless package` built: the gateway's zip and the CloudFormation template.

- The zip: Lambda refuses code that unzips to more than 250 MB, and the gateway needs its
  templates, prompts, migrations and the UI's vendored chart.js at run time. Every compiled
  extension is built for the functions' runtime (``cpython-312`` for ``python3.12``): a wheel for
  another Python fails at import on Lambda (the packaging plugin's cache is keyed by the
  requirements alone, whatever Python they were installed for).
- The template: no secret in any function's environment (they come from SSM), the ML image by
  digest behind an AWS_IAM function URL, one role per function with no wildcard actions, every
  bucket private, encrypted, TLS-only and under lifecycle rules.

Usage: python infra/check_package.py .serverless
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

LIMIT_BYTES = 250 * 1024 * 1024
REQUIRED = (
    "gateway/handler.py",
    "shared/search_space.json",
    "prompts/current.json",
    "infra/migrations/gateway/0001_initial_schema.sql",
    "infra/migrations/ml/0001_ml_schema.sql",
    "ui/node_modules/chart.js/dist/chart.umd.min.js",
    "gateway/web/templates/base.html",
)
# latina_cli composes both services for the command line: never part of a deployed package
FORBIDDEN_TOP = ("ml_service", "latina_cli", "tests", "torch", "scipy", ".venv", "node_modules")
SECRETS = {
    "DATABASE_URL",
    "LATINA_SECRET_KEY",
    "ML_SERVICE_TOKEN",
    "LEONARDO_API_KEY",
    "REPLICATE_API_TOKEN",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
}
FUNCTIONS = ("Ml", "Gateway", "Worker", "Migrate")
_EXTENSION_ABI = re.compile(r"\.cpython-(\d)(\d+)-[^/]*\.so$")


def check_zip(path: Path, runtime: str) -> list[str]:
    """``runtime``: the zipped functions' Lambda runtime (``python3.12``)."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    names = {info.filename for info in infos}
    size = sum(info.file_size for info in infos)
    problems = [f"zip: missing {name}" for name in REQUIRED if name not in names]
    for name in sorted(names):
        abi = _EXTENSION_ABI.search(name)
        if abi and f"python{abi[1]}.{abi[2]}" != runtime:
            problems.append(f"zip: {name} is built for python{abi[1]}.{abi[2]}, not {runtime}")
    tops = {name.split("/", 1)[0] for name in names}
    problems += [f"zip: must not ship {top}/" for top in FORBIDDEN_TOP if top in tops]
    if size > LIMIT_BYTES:
        problems.append(f"zip: {size / 2**20:.1f} MiB unzipped is over Lambda's 250 MiB")
    print(f"{path}: {len(infos)} files, {size / 2**20:.1f} MiB unzipped (limit 250 MiB)")
    return problems


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s
        for policy in role["Properties"].get("Policies", [])
        for s in policy["PolicyDocument"]["Statement"]
    ]


def check_template(path: Path) -> list[str]:
    resources: dict[str, Any] = json.loads(path.read_text())["Resources"]
    problems: list[str] = []
    roles = set()
    for name in FUNCTIONS:
        function = resources[f"{name}LambdaFunction"]["Properties"]
        env = function.get("Environment", {}).get("Variables", {})
        problems += [f"{name}: secret {var} in the environment" for var in SECRETS & set(env)]
        if not str(env.get("LATINA_SSM_PREFIX", "")).startswith("/latina/"):
            problems.append(f"{name}: LATINA_SSM_PREFIX missing")
        roles.add(json.dumps(function["Role"], sort_keys=True))
    if len(roles) != len(FUNCTIONS):
        problems.append("functions share IAM roles")
    image = resources["MlLambdaFunction"]["Properties"]["Code"].get("ImageUri", "")
    if "@sha256:" not in image:
        problems.append("ml: image not referenced by digest")
    if resources["MlLambdaFunctionUrl"]["Properties"]["AuthType"] != "AWS_IAM":
        problems.append("ml: function URL without AWS_IAM auth")
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            for statement in _statements(resource):
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                if any(a == "*" or a.endswith(":*") for a in actions):
                    problems.append(f"{logical}: wildcard action {actions}")
                if statement.get("Resource") == "*":
                    problems.append(f"{logical}: wildcard resource")
        if resource["Type"] == "AWS::S3::Bucket":
            props = resource["Properties"]
            block = props.get("PublicAccessBlockConfiguration", {})
            if (
                not all(
                    block.get(k)
                    for k in (
                        "BlockPublicAcls",
                        "BlockPublicPolicy",
                        "IgnorePublicAcls",
                        "RestrictPublicBuckets",
                    )
                )
                and logical != "ServerlessDeploymentBucket"
            ):
                problems.append(f"{logical}: public access not blocked")
            if "BucketEncryption" not in props:
                problems.append(f"{logical}: not encrypted")
            if "LifecycleConfiguration" not in props and logical != "ServerlessDeploymentBucket":
                problems.append(f"{logical}: no lifecycle rules")
    buckets = [k for k, r in resources.items() if r["Type"] == "AWS::S3::Bucket"]
    policies = {
        json.dumps(r["Properties"]["Bucket"])
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy"
    }
    problems += [
        f"{b}: no TLS-only bucket policy" for b in buckets if json.dumps({"Ref": b}) not in policies
    ]
    print(
        f"{path}: {len(resources)} resources, {len(buckets)} buckets, {len(roles)} function roles"
    )
    return problems


def zip_runtime(template: Path) -> str:
    """The one runtime of the functions that run from the zip."""
    resources: dict[str, Any] = json.loads(template.read_text())["Resources"]
    runtimes = {
        r["Properties"]["Runtime"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and "Runtime" in r["Properties"]
    }
    if len(runtimes) != 1:
        raise SystemExit(f"{template}: the zipped functions have runtimes {sorted(runtimes)}")
    return runtimes.pop()


def main(folder: str) -> int:
    base = Path(folder)
    template = base / "cloudformation-template-update-stack.json"
    problems = check_zip(base / "latina.zip", zip_runtime(template))
    problems += check_template(template)
    for problem in problems:
        print(f"  problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

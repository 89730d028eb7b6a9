"""What ``make package`` builds, as the rehearsal uses it: the gateway's zip unzipped, and each
function's handler, environment and schedule read from the CloudFormation template.

The packaging is ``make package-artifacts`` (what ``make package`` runs before cfn-lint), with
one parameter: the Python of the interpreter that runs the rehearsal (the zip's compiled wheels
must load in it).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "cloudformation-template-update-stack.json"


@dataclass(frozen=True)
class Function:
    logical: str  # the template's name (GatewayLambdaFunction)
    name: str  # the deployed name (latina-dev-gateway)
    handler: str | None  # None for the container image (its CMD says)
    runtime: str | None
    environment: dict[str, Any]  # values may be intrinsic functions ({"Ref": ...})
    memory_mb: int
    timeout: int
    schedule_input: Any | None  # the event its schedule sends, if it has one


@dataclass(frozen=True)
class Package:
    folder: Path
    seconds: float

    @property
    def template(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.folder / TEMPLATE).read_text())
        return loaded

    def functions(self) -> dict[str, Function]:
        """The template's functions by short name (``gateway``, ``worker``, ``ml``, ...)."""
        resources = self.template["Resources"]
        schedules: dict[str, Any] = {}
        for resource in resources.values():
            if resource["Type"] == "AWS::Events::Rule":
                for target in resource["Properties"]["Targets"]:
                    logical = target["Arn"]["Fn::GetAtt"][0]
                    schedules[logical] = json.loads(target["Input"])
        found = {}
        for logical, resource in resources.items():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            props = resource["Properties"]
            short = props["FunctionName"].rsplit("-", 1)[-1]
            found[short] = Function(
                logical=logical,
                name=props["FunctionName"],
                handler=props.get("Handler"),
                runtime=props.get("Runtime"),
                environment=props.get("Environment", {}).get("Variables", {}),
                memory_mb=int(props.get("MemorySize", 1024)),
                timeout=int(props.get("Timeout", 6)),
                schedule_input=schedules.get(logical),
            )
        return found

    def unzip(self, target: Path) -> Path:
        """The gateway's zip unpacked into ``target``, read-only as ``/var/task`` is."""
        with zipfile.ZipFile(self.folder / "latina.zip") as archive:
            archive.extractall(target)
        for folder, _dirs, files in os.walk(target):
            for name in files:
                path = Path(folder) / name
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            Path(folder).chmod(0o555)
        return target


class PackageBuild:
    """``make package-artifacts`` into ``folder`` for ``python_version``, in the background: the
    rehearsal starts it when the test session starts and the other tests run meanwhile."""

    def __init__(self, folder: Path, python_version: str) -> None:
        self.folder = folder
        self.log = folder.with_suffix(".log")
        self._started = time.perf_counter()
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    "nice",  # behind the tests it overlaps
                    "-n",
                    "10",
                    "make",
                    "--no-print-directory",
                    "package-artifacts",
                    f"PACKAGE_DIR={folder}",
                    f"PACKAGE_PARAMS=--param=pythonVersion={python_version}",
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._seconds: float | None = None

    def result(self, timeout: float = 900) -> Package:
        """The package once built; raises with the build's output when it failed (the checks of
        ``infra/check_package.py`` included)."""
        code = self._process.wait(timeout)
        if self._seconds is None:
            self._seconds = time.perf_counter() - self._started
        if code != 0:
            raise RuntimeError(f"make package-artifacts failed:\n{self.log.read_text()}")
        return Package(self.folder, self._seconds)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)


def resolve(value: Any, references: dict[str, str]) -> str:
    """A template value with its intrinsic functions resolved from ``references`` (logical
    name, or ``Logical.Attribute`` for ``Fn::GetAtt``); an unknown reference fails loudly."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return references[value["Ref"]]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical, attribute = value["Fn::GetAtt"]
        return references[f"{logical}.{attribute}"]
    raise ValueError(f"cannot resolve {value!r}")

"""What the Lambda packages ship: the ML image's dependency list must not bring a CUDA build of
torch, and each function's requirements (generated from requirements.lock) must cover what its
handler imports. (pip resolves against the package index; nothing is installed.) That they pin
the locked versions, and that the tests run those versions, is tests/unit/test_lock.py's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra import lock as lockfile

ROOT = Path(__file__).resolve().parents[2]
ML_REQUIREMENTS = ROOT / "infra" / "requirements-ml.txt"
GATEWAY_REQUIREMENTS = ROOT / "infra" / "requirements-gateway.txt"
CUDA = re.compile(r"^(nvidia-.*|triton|cuda-.*|.*-cu\d+)$")


def pins(path: Path) -> dict[str, str]:
    return lockfile.pins(path)


def cuda_problems(report: dict[str, Any]) -> list[str]:
    """CUDA packages a pip installation report would install, or that torch would pull in."""
    problems = []
    for item in report["install"]:
        name = canonicalize_name(item["metadata"]["name"])
        if CUDA.match(name):
            problems.append(f"{name} would be installed")
        if name == "torch":
            cuda_deps = [
                d
                for d in item["metadata"].get("requires_dist", [])
                if CUDA.match(canonicalize_name(Requirement(d).name))
            ]
            if cuda_deps or "+cpu" not in item["metadata"]["version"]:
                version = item["metadata"]["version"]
                problems.append(f"torch {version} is a CUDA build ({len(cuda_deps)} CUDA deps)")
    return problems


def pip_report(*args: str) -> dict[str, Any]:
    out = ROOT / "test-output" / f"pip-report-{os.getpid()}.json"
    out.parent.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(out),
            *args,
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    report: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return report


def test_ml_image_dependency_list_has_no_cuda_build_of_torch() -> None:
    report = pip_report("-r", str(ML_REQUIREMENTS))
    names = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
        for i in report["install"]
    }
    assert {"torch", "botorch", "gpytorch", "mangum", "asyncpg"} <= set(names)
    assert names["torch"].endswith("+cpu")
    assert cuda_problems(report) == []


def test_the_cuda_check_flags_torch_from_pypi_for_the_lambda_platform() -> None:
    """Without the +cpu pin, PyPI's torch for the image's platform is a CUDA build: the check
    above would catch a requirements change that let it in."""
    report = pip_report(
        "--no-deps",
        "--only-binary=:all:",
        "--implementation=cp",
        "--python-version=3.12",
        "--platform=manylinux_2_28_x86_64",
        "torch==2.13.0",
    )
    problems = cuda_problems(report)
    assert problems and "CUDA build" in problems[0]


def test_dockerfile_installs_the_cpu_pinned_list_on_the_lambda_python_base_image() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile.ml").read_text()
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:", dockerfile, re.M)
    assert "-r /tmp/requirements-ml.txt" in dockerfile
    assert "download.pytorch.org/whl/cpu" in dockerfile
    assert 'CMD ["ml_service.handler.handler"]' in dockerfile
    assert pins(ML_REQUIREMENTS)["torch"].endswith("+cpu")


def closure(roots: dict[str, str]) -> set[str]:
    """Every installed distribution the pinned requirements bring, transitively."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(name, set()) for name in roots]
    while todo:
        name, extras = todo.pop()
        if name in seen and not extras:
            continue
        seen.add(name)
        for raw in metadata.requires(name) or []:
            dep = Requirement(raw)
            env = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(e) for e in env):
                todo.append((canonicalize_name(dep.name), set(dep.extras)))
    return seen


def import_with_only(module: str, shipped: set[str], tmp_path: Path) -> str:
    """Import ``module`` in a fresh interpreter where every installed distribution outside
    ``shipped`` is hidden, as if absent (optional imports then fail as they would on Lambda).
    Returns "" on success, else the error."""
    probe = f"""
import importlib, sys
from importlib import metadata
from importlib.abc import MetaPathFinder
from packaging.utils import canonicalize_name
shipped = set({sorted(shipped)!r})
owners = metadata.packages_distributions()

class Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {{canonicalize_name(d) for d in owners.get(top, [])}}
        if dists and not dists & shipped and top not in ("gateway", "shared", "ml_service"):
            raise ModuleNotFoundError(f"No module named {{top!r}} (not shipped)", name=top)
        return None

sys.meta_path.insert(0, Hide())
importlib.import_module({module!r})
"""
    env = {**os.environ, "LATINA_DATA_DIR": str(tmp_path)}
    for name in ("LATINA_SSM_PREFIX", "AWS_LAMBDA_FUNCTION_NAME"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    return "" if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("module", "path"),
    [("gateway.handler", GATEWAY_REQUIREMENTS), ("ml_service.handler", ML_REQUIREMENTS)],
)
def test_each_handler_imports_with_only_what_its_package_ships(
    module: str, path: Path, tmp_path: Path
) -> None:
    shipped = closure(pins(path)) | {"latina"}
    assert import_with_only(module, shipped, tmp_path) == ""


def test_the_import_check_fails_when_a_needed_package_is_not_shipped(tmp_path: Path) -> None:
    shipped = closure(pins(GATEWAY_REQUIREMENTS)) - {"pgqueuer"}
    assert "pgqueuer" in import_with_only("gateway.handler", shipped | {"latina"}, tmp_path)


def test_gateway_package_does_without_torch_and_scipy() -> None:
    """The gateway zip must stay under Lambda's 250 MB: nothing heavy may creep in."""
    shipped = closure(pins(GATEWAY_REQUIREMENTS))
    assert not {"torch", "scipy", "botorch", "gpytorch"} & shipped

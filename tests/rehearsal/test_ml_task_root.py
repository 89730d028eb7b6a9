"""The ML image's task root, built by infra/Dockerfile.ml's own steps, runs the service alone.

Only the task root and its install are on the path (``python -I -S``): a package missing from
infra/requirements-ml.txt, or a project directory the Dockerfile does not COPY, fails here
rather than at the first cold start. The install is cached in .venv/rehearsal/ (the first build
takes a while); each test copies the project files afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.rehearsal.ml_image import (
    DOCKERFILE,
    REPO,
    DockerfileError,
    TaskRoot,
    build_task_root,
    default_cache_dir,
    lambda_python,
    run_isolated,
)

# what the service's import chain needs from the install, then the service as Lambda loads it
DEPENDENCIES = ["torch", "botorch", "gpytorch", "mangum", "asyncpg", "aws_lambda_powertools"]
SERVICE = ["ml_service.app", "ml_service.optimizer.gp"]

IMPORT = """
import importlib, json
print(json.dumps({name: importlib.import_module(name).__file__ for name in sys.argv[1:]}))
"""

# and CMD's handler (the last argument), loaded as Lambda does at a cold start: its module is
# imported with the others; local settings, so nothing is opened
IMPORT_AND_LOAD_HANDLER = (
    "cmd = sys.argv.pop()\n"
    + IMPORT
    + """
module, _, attribute = cmd.rpartition(".")
assert callable(getattr(sys.modules[module], attribute)), cmd
"""
)


def _build(into: Path, dockerfile: str | Path = DOCKERFILE) -> TaskRoot:
    return build_task_root(
        REPO, default_cache_dir(), lambda_python(), dockerfile=dockerfile, into=into
    )


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> TaskRoot:
    return _build(tmp_path_factory.mktemp("ml-image") / "image")


def test_the_task_root_holds_what_the_dockerfile_copies(task_root: TaskRoot) -> None:
    assert sorted(path.name for path in task_root.path.iterdir()) == [
        "infra",
        "ml_service",
        "shared",
    ]
    copied = task_root.path / "infra" / "migrations"
    source = REPO / "infra" / "migrations"
    assert {path.relative_to(copied) for path in copied.rglob("*.sql")} == {
        path.relative_to(source) for path in source.rglob("*.sql")
    }
    assert not (task_root.image / "tmp" / "requirements-ml.txt").exists()  # the RUN's rm
    assert task_root.handler == "ml_service.handler.handler"
    assert task_root.python_version == "3.12"


def test_the_image_loads_its_handler_from_its_own_task_root(task_root: TaskRoot) -> None:
    handler_module = task_root.handler.rpartition(".")[0]
    service = [*SERVICE, handler_module]
    result = run_isolated(
        task_root, IMPORT_AND_LOAD_HANDLER, *DEPENDENCIES, *service, task_root.handler
    )

    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    for name in DEPENDENCIES:
        assert Path(files[name]).is_relative_to(task_root.site), (name, files[name])
    for name in service:  # the image's copy, not the repository's
        assert Path(files[name]).is_relative_to(task_root.path), (name, files[name])


def test_a_directory_missing_from_the_task_root_fails_the_import(tmp_path: Path) -> None:
    root = _build(tmp_path / "image")
    shutil.rmtree(root.path / "shared")

    result = run_isolated(root, IMPORT, "ml_service.app")

    assert result.returncode != 0
    assert "No module named 'shared'" in result.stderr


def _variant(tmp_path: Path, line: str) -> Path:
    """The real Dockerfile with ``line`` added before its CMD."""
    lines = (REPO / DOCKERFILE).read_text().splitlines()
    cmd = next(i for i, text in enumerate(lines) if text.startswith("CMD "))
    lines.insert(cmd, line)
    variant = tmp_path / "Dockerfile.ml"
    variant.write_text("\n".join(lines) + "\n")
    return variant


def test_a_copy_added_to_the_dockerfile_reaches_the_task_root(tmp_path: Path) -> None:
    variant = _variant(tmp_path, "COPY infra/requirements-ml.txt ${LAMBDA_TASK_ROOT}/")

    root = _build(tmp_path / "image", dockerfile=variant)

    assert (root.path / "requirements-ml.txt").is_file()


def test_a_copy_of_what_dockerignore_leaves_out_fails_as_docker_build_would(
    tmp_path: Path,
) -> None:
    variant = _variant(tmp_path, "COPY prompts/ ${LAMBDA_TASK_ROOT}/prompts/")

    with pytest.raises(DockerfileError, match=r"COPY prompts/: .*\.dockerignore"):
        _build(tmp_path / "image", dockerfile=variant)

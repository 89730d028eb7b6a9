"""The rehearsal reads infra/Dockerfile.ml itself: what it finds there, and what it refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.rehearsal.ml_image import (
    DOCKERFILE,
    LAMBDA_TASK_ROOT,
    REPO,
    BuildContext,
    CompileAll,
    Copy,
    DockerfileError,
    From,
    PipInstall,
    parse_dockerfile,
)

REAL = REPO / DOCKERFILE


def _variant(tmp_path: Path, before: str, insert: str) -> tuple[Path, int]:
    """The real Dockerfile with ``insert`` as a line of its own before the line ``before``
    starts; the inserted line's number."""
    lines = REAL.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(before))
    lines.insert(index, insert)
    path = tmp_path / "Dockerfile.ml"
    path.write_text("\n".join(lines) + "\n")
    return path, index + 1


def test_the_real_dockerfile_gives_the_rehearsal_its_steps() -> None:
    parsed = parse_dockerfile(REAL)

    assert parsed.requirements_source == "infra/requirements-ml.txt"
    assert parsed.task_root_sources == ("shared/", "ml_service/", "infra/migrations/")
    assert parsed.handler == "ml_service.handler.handler"
    assert parsed.python_version == "3.12"
    assert parsed.base_image == "public.ecr.aws/lambda/python:3.12"
    assert [type(step) for step in parsed.steps[:3]] == [From, Copy, PipInstall]
    install = parsed.install
    assert install.target == LAMBDA_TASK_ROOT
    # in the image's /tmp (not this machine's), then removed by the RUN's `&& rm`
    assert install.requirements == "/tmp/requirements-ml.txt"  # noqa: S108
    assert install.removes == (install.requirements,)
    # the ARG after FROM reached the RUN line through its continuation lines
    assert ("--extra-index-url", "https://download.pytorch.org/whl/cpu") in install.options
    (compiled,) = [step for step in parsed.steps if isinstance(step, CompileAll)]
    assert compiled.paths == (f"{LAMBDA_TASK_ROOT}/shared", f"{LAMBDA_TASK_ROOT}/ml_service")


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("ENV X=1", "ENV is not understood"),
        ("WORKDIR /var/task", "WORKDIR is not understood"),
        ("RUN apt-get install foo", "apt-get install foo"),
        ("RUN pip install --no-deps --target /var/task -r /tmp/x.txt", "'--no-deps'"),
        ("RUN python -m compileall -q /var/task; echo done", "';'"),
        ("COPY --chown=1000 shared/ /var/task/shared/", "COPY options"),
        ("COPY shared/ ${NOWHERE}/shared/", "$NOWHERE is not defined"),
        ("FROM python:3.12", "second FROM"),
    ],
)
def test_a_line_the_rehearsal_does_not_understand_fails_naming_it(
    tmp_path: Path, line: str, named: str
) -> None:
    path, number = _variant(tmp_path, "CMD ", line)

    with pytest.raises(DockerfileError) as raised:
        parse_dockerfile(path)

    assert f"{path}:{number}:" in str(raised.value)
    assert named in str(raised.value)


def test_an_added_copy_reaches_the_steps(tmp_path: Path) -> None:
    path, _ = _variant(tmp_path, "# Compile once", "COPY prompts/ ${LAMBDA_TASK_ROOT}/prompts/")

    parsed = parse_dockerfile(path)

    assert parsed.task_root_sources[-1] == "prompts/"
    assert parsed.copies[-1].dest == f"{LAMBDA_TASK_ROOT}/prompts/"


def test_the_build_context_leaves_out_what_dockerignore_does() -> None:
    context = BuildContext(REPO)

    assert not context.excluded("ml_service/app.py")
    assert not context.excluded("infra/requirements-ml.txt")
    assert context.excluded("ml_service/__pycache__/app.cpython-311.pyc")
    assert context.excluded("shared/aws/__pycache__/sigv4.cpython-312.pyc")
    assert context.excluded("gateway/app.py")
    assert context.excluded("infra/requirements-gateway.txt")


def test_a_copied_directory_has_no_pycache_of_the_source_tree(tmp_path: Path) -> None:
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    for name in ["__init__.py", "sub/mod.py", "__pycache__/x.pyc", "sub/__pycache__/mod.pyc"]:
        (tmp_path / "ml_service" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ml_service" / name).write_text("")

    files = [relative for relative, _ in BuildContext(tmp_path).files("ml_service/")]

    assert files == ["__init__.py", "sub/mod.py"]

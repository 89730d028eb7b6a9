"""The ML image's task root without Docker, built by the steps of ``infra/Dockerfile.ml`` itself.

The ML service deploys as a Lambda container image, and Docker cannot run on every machine the
tests run on. So this module reads the Dockerfile and performs its steps against a directory:
the rehearsal runs what the image holds, and a change to the Dockerfile reaches the rehearsal.
An instruction or a RUN shape this module does not understand raises ``DockerfileError`` naming
the line: it fails the rehearsal, it is never skipped. ``make ml-image`` builds the real image
from the same file where a Docker engine runs.

Layout: two directories, not one. In the image, ``pip install --target ${LAMBDA_TASK_ROOT}``
puts ~64 packages (torch alone is ~700 MB) into /var/task, the COPY steps add the project's
packages beside them, and Lambda puts /var/task first on ``sys.path``. Here the install is made
once and cached (keyed by the requirements file, the install's options and the Python), and
every build copies the project files afresh into a fresh directory (the task root). Rather than
linking tens of thousands of installed files into each fresh task root, the cached install stays
in its own directory and a runner puts ``TaskRoot.sys_path`` = ``[task root, install]`` on the
path. Python takes each top-level name from the first entry that has it, which is what the one
merged directory gives as long as no top-level name is in both: the build checks that (a package
shipping a top-level ``shared`` would be merged with ours in the image but shadowed here), so
both layouts import the same modules.

Where the rehearsal differs from the image, on purpose and nowhere else:

- Python. The Lambda runtime is the base image's tag (3.12). Where no python3.12 runs (the
  development machine has 3.11 only), ``lambda_python()`` falls back to the venv's base
  interpreter and the same pinned versions install as that Python's wheels.
- The torch index. The Dockerfile's extra index (PyTorch's CPU wheels) may be unreachable; a
  configured local wheel folder stands in for it (see ``_index_arguments``).
- The installer: uv instead of pip, same requirements file, same flat ``--target`` layout,
  bytecode compiled as pip does by default.
- The base image's own packages (its runtime client and bundled boto3) are absent: the runner
  uses ``python -I -S`` with only the two directories added, so whatever the service imports
  must come from the requirements file or the COPY steps.

Run ``python -m tests.rehearsal.ml_image`` to build one and print where it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = "infra/Dockerfile.ml"
# Set by AWS's Lambda base image (its ENV), not by our Dockerfile; this is its value there.
LAMBDA_TASK_ROOT = "/var/task"
BASE_IMAGE_ENV = {"LAMBDA_TASK_ROOT": LAMBDA_TASK_ROOT}
# Part of the cache key: bump it when what this module puts into a cached install changes.
CACHE_SCHEMA = 1
# Cached installs kept (the least recently used go): each is ~1 GB, and worktrees share .venv.
KEEP_INSTALLS = 3

Log = Callable[[str], None]
T = TypeVar("T")


def _log_stderr(message: str) -> None:
    print(f"[ml image] {message}", file=sys.stderr, flush=True)


class DockerfileError(ValueError):
    """A Dockerfile line the rehearsal does not understand, or a build step that failed."""


# --- the steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class From:
    line: int
    image: str
    python_version: str  # from the tag: "3.12" for public.ecr.aws/lambda/python:3.12


@dataclass(frozen=True)
class Copy:
    line: int
    sources: tuple[str, ...]  # in the build context (the repository), as written
    dest: str  # an absolute path in the image


@dataclass(frozen=True)
class PipInstall:
    line: int
    target: str  # image path
    requirements: str  # image path of the -r file
    options: tuple[tuple[str, str | None], ...]  # the other pip options and their values
    removes: tuple[str, ...]  # image paths of the `&& rm ...` that follows
    removes_force: bool


@dataclass(frozen=True)
class CompileAll:
    line: int
    paths: tuple[str, ...]  # image paths
    options: tuple[str, ...]


@dataclass(frozen=True)
class Cmd:
    line: int
    handler: str


Step = From | Copy | PipInstall | CompileAll | Cmd


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    steps: tuple[Step, ...]

    def _one(self, kind: type[T]) -> T:
        found = [step for step in self.steps if isinstance(step, kind)]
        if len(found) != 1:
            raise DockerfileError(
                f"{self.path}: the rehearsal needs exactly one {kind.__name__} step, "
                f"found {len(found)}"
            )
        return found[0]

    @property
    def base_image(self) -> str:
        return self._one(From).image

    @property
    def python_version(self) -> str:
        return self._one(From).python_version

    @property
    def handler(self) -> str:
        return self._one(Cmd).handler

    @property
    def install(self) -> PipInstall:
        return self._one(PipInstall)

    @property
    def copies(self) -> tuple[Copy, ...]:
        return tuple(step for step in self.steps if isinstance(step, Copy))

    @property
    def requirements_source(self) -> str:
        """The context path of the file the install reads, through the COPY that put it there."""
        install = self.install
        found = None
        for step in self.steps:
            if step is install:
                break
            if isinstance(step, Copy):
                for source in step.sources:
                    if _copy_destination(step, source) == install.requirements:
                        found = source
        if found is None:
            raise DockerfileError(
                f"{self.path}:{install.line}: no COPY before the install puts "
                f"{install.requirements} into the image"
            )
        return found

    @property
    def task_root_sources(self) -> tuple[str, ...]:
        """The context paths COPYed into ${LAMBDA_TASK_ROOT}, in order."""
        return tuple(
            source
            for step in self.copies
            if _under(step.dest, LAMBDA_TASK_ROOT)
            for source in step.sources
        )


def _under(path: str, directory: str) -> bool:
    normal = posixpath.normpath(path)
    return normal == directory or normal.startswith(directory.rstrip("/") + "/")


def _copy_destination(step: Copy, source: str) -> str:
    """Where COPY puts a file source (a directory source's contents go into ``dest``)."""
    if step.dest.endswith("/") or len(step.sources) > 1:
        return posixpath.join(step.dest, posixpath.basename(source.rstrip("/")))
    return posixpath.normpath(step.dest)


# --- parsing -------------------------------------------------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(r"\$(?:\{([^}]*)\}|(" + _NAME + "))")
_INSTRUCTION = re.compile(r"([A-Za-z]+)(?:\s+(.*))?$", re.DOTALL)
# pip install's options the rehearsal knows how to carry out (see _uv_arguments); True: has a value
PIP_OPTIONS = {"--no-cache-dir": False, "--extra-index-url": True}
_COMPILEALL_FLAGS = {"-q", "-f", "-l", "-b"}
_COMPILEALL_VALUED = {"-j", "-r", "-o"}
_PYTHONS = {"python", "python3"}


def parse_dockerfile(path: Path) -> Dockerfile:
    """The Dockerfile's steps; ``DockerfileError`` names any line not understood."""
    global_args: dict[str, str] = {}  # ARGs before FROM: visible to FROM only
    variables: dict[str, str] | None = None  # after FROM: the base image's ENV and the ARGs
    steps: list[Step] = []
    for line, text in _logical_lines(path):
        where = f"{path}:{line}"
        match = _INSTRUCTION.match(text)
        if match is None:
            raise DockerfileError(f"{where}: not an instruction: {text!r}")
        instruction, rest = match.group(1).upper(), (match.group(2) or "").strip()
        if instruction == "ARG":
            scope = global_args if variables is None else variables
            _parse_arg(rest, scope, global_args, where)
        elif instruction == "FROM":
            if variables is not None:
                raise DockerfileError(f"{where}: a second FROM (multi-stage builds not understood)")
            steps.append(_parse_from(rest, global_args, line, where))
            variables = dict(BASE_IMAGE_ENV)
        elif variables is None:
            raise DockerfileError(f"{where}: {instruction} before FROM")
        elif instruction == "COPY":
            steps.append(_parse_copy(rest, variables, line, where))
        elif instruction == "RUN":
            steps.append(_parse_run(rest, variables, line, where))
        elif instruction == "CMD":
            steps.append(_parse_cmd(rest, line, where))
        else:
            raise DockerfileError(
                f"{where}: {instruction} is not understood by the rehearsal "
                f"(tests/rehearsal/ml_image.py): teach it what {instruction} does to the image, "
                "or the rehearsal would no longer run what the image holds"
            )
    if not steps:
        raise DockerfileError(f"{path}: no FROM")
    return Dockerfile(path=path, steps=tuple(steps))


def _logical_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(first line number, instruction text): comments dropped, continuations joined."""
    start = 0
    pieces: list[str] = []
    seen_instruction = False
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            # a parser directive changing the escape character would change how lines join
            if not seen_instruction and re.match(r"#\s*escape\s*=", stripped, re.IGNORECASE):
                raise DockerfileError(f"{path}:{number}: the escape directive is not understood")
            continue  # comments, also between the lines of a continued instruction
        if not stripped:
            continue
        if not pieces:
            start = number
        seen_instruction = True
        body = raw.rstrip()
        if body.endswith("\\"):
            pieces.append(body[:-1])
            continue
        pieces.append(body)
        yield start, "".join(pieces).strip()
        pieces = []
    if pieces:
        raise DockerfileError(f"{path}:{start}: the file ends inside a continued instruction")


def _substitute(text: str, variables: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if not re.fullmatch(_NAME, name):
            raise DockerfileError(f"{where}: ${{{name}}}: only ${{NAME}} and $NAME are understood")
        if name not in variables:
            raise DockerfileError(
                f"{where}: ${name} is not defined here (ARG NAME=default after FROM, or a "
                f"variable of the base image: {', '.join(sorted(BASE_IMAGE_ENV))})"
            )
        return variables[name]

    return _VARIABLE.sub(replace, text)


def _parse_arg(
    rest: str, scope: dict[str, str], global_args: Mapping[str, str], where: str
) -> None:
    words = shlex.split(rest)
    if not words:
        raise DockerfileError(f"{where}: ARG without a name")
    for word in words:
        name, has_default, default = word.partition("=")
        if not re.fullmatch(_NAME, name):
            raise DockerfileError(f"{where}: ARG {word!r}: not NAME=default")
        if has_default:
            scope[name] = _substitute(default, scope, where)
        elif scope is not global_args and name in global_args:
            scope[name] = global_args[name]  # re-declared after FROM: the global default
        else:
            raise DockerfileError(
                f"{where}: ARG {name} has no default (build arguments are not understood)"
            )


def _parse_from(rest: str, global_args: Mapping[str, str], line: int, where: str) -> From:
    words = _substitute(rest, global_args, where).split()
    if len(words) != 1 or words[0].startswith("--"):
        raise DockerfileError(f"{where}: FROM {rest!r}: only FROM <image>:<tag> is understood")
    image = words[0]
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    version = re.match(r"\d+\.\d+", tag)
    if version is None:
        raise DockerfileError(f"{where}: FROM {image}: no Python version in the tag {tag!r}")
    return From(line=line, image=image, python_version=version.group(0))


def _parse_copy(rest: str, variables: Mapping[str, str], line: int, where: str) -> Copy:
    if rest.startswith("["):
        raise DockerfileError(f"{where}: COPY in JSON form is not understood")
    words = [_substitute(word, variables, where) for word in rest.split()]
    if any(word.startswith("--") for word in words):
        raise DockerfileError(f"{where}: COPY {rest!r}: COPY options are not understood")
    if len(words) < 2:
        raise DockerfileError(f"{where}: COPY needs a source and a destination")
    *sources, dest = words
    for source in sources:
        normal = posixpath.normpath(source)
        if source.startswith("/") or normal.startswith("..") or set("*?[") & set(source):
            raise DockerfileError(
                f"{where}: COPY source {source!r}: only plain paths inside the build context"
            )
    if not dest.startswith("/"):
        raise DockerfileError(
            f"{where}: COPY destination {dest!r}: only absolute paths (WORKDIR is not modelled)"
        )
    if len(sources) > 1 and not dest.endswith("/"):
        raise DockerfileError(f"{where}: COPY of several sources needs a destination ending in /")
    return Copy(line=line, sources=tuple(sources), dest=dest)


def _shell_commands(text: str, where: str) -> list[list[str]]:
    """The commands of a RUN joined by ``&&``; any other shell syntax is refused."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            commands.append([])
        elif set(token) <= set("();<>|&") or "$" in token or "`" in token:
            raise DockerfileError(f"{where}: RUN: shell syntax {token!r} is not understood")
        else:
            commands[-1].append(token)
    if any(not command for command in commands):
        raise DockerfileError(f"{where}: RUN: an empty command")
    return commands


def _parse_run(
    rest: str, variables: Mapping[str, str], line: int, where: str
) -> PipInstall | CompileAll:
    if rest.startswith("["):
        raise DockerfileError(f"{where}: RUN in JSON form is not understood")
    first, *more = _shell_commands(_substitute(rest, variables, where), where)
    if first[:2] in (["pip", "install"], ["pip3", "install"]):
        return _parse_pip_install(first[2:], more, line, where)
    if first[0] in _PYTHONS and first[1:3] == ["-m", "pip"] and first[3:4] == ["install"]:
        return _parse_pip_install(first[4:], more, line, where)
    if first[0] in _PYTHONS and first[1:3] == ["-m", "compileall"] and not more:
        return _parse_compileall(first[3:], line, where)
    raise DockerfileError(
        f"{where}: RUN {rest!r} is not a shape the rehearsal understands: "
        "`pip install [options] --target DIR -r FILE [&& rm FILE...]` or "
        "`python -m compileall [options] PATH...`"
    )


def _parse_pip_install(
    words: list[str], more: list[list[str]], line: int, where: str
) -> PipInstall:
    target: list[str] = []
    requirements: list[str] = []
    options: list[tuple[str, str | None]] = []
    index = 0
    while index < len(words):
        word = words[index]
        name, has_value, value = word.partition("=") if word.startswith("--") else (word, "", "")
        takes_value = name in ("--target", "-t", "-r", "--requirement") or PIP_OPTIONS.get(name)
        if not word.startswith("-") or (name not in PIP_OPTIONS and not takes_value):
            raise DockerfileError(
                f"{where}: pip install {word!r} is not understood (only -r FILE, --target DIR, "
                f"{', '.join(PIP_OPTIONS)})"
            )
        if takes_value and not has_value:
            index += 1
            if index == len(words):
                raise DockerfileError(f"{where}: pip install {word} needs a value")
            value = words[index]
        if name in ("--target", "-t"):
            target.append(value)
        elif name in ("-r", "--requirement"):
            requirements.append(value)
        else:
            options.append((name, value if takes_value else None))
        index += 1
    if len(target) != 1 or len(requirements) != 1:
        raise DockerfileError(f"{where}: pip install needs exactly one --target and one -r")
    removes: list[str] = []
    force = False
    for command in more:
        flags = [word for word in command[1:] if word.startswith("-")]
        if command[0] != "rm" or not set(flags) <= {"-f", "-r", "-rf", "-fr"}:
            raise DockerfileError(
                f"{where}: after pip install only `&& rm [-f] PATH...` is understood, "
                f"not {shlex.join(command)!r}"
            )
        force = force or any("f" in flag for flag in flags)
        removes.extend(word for word in command[1:] if not word.startswith("-"))
    return PipInstall(
        line=line,
        target=target[0],
        requirements=requirements[0],
        options=tuple(options),
        removes=tuple(removes),
        removes_force=force,
    )


def _parse_compileall(words: list[str], line: int, where: str) -> CompileAll:
    options: list[str] = []
    paths: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in _COMPILEALL_FLAGS:
            options.append(word)
        elif word in _COMPILEALL_VALUED and index + 1 < len(words):
            options.extend(words[index : index + 2])
            index += 1
        elif word.startswith("-") or not word.startswith("/"):
            raise DockerfileError(
                f"{where}: python -m compileall {word!r} is not understood "
                "(absolute paths and the options -q -f -l -b -j -r -o)"
            )
        else:
            paths.append(word)
        index += 1
    if not paths:
        raise DockerfileError(f"{where}: python -m compileall without a path")
    return CompileAll(line=line, paths=tuple(paths), options=tuple(options))


def _parse_cmd(rest: str, line: int, where: str) -> Cmd:
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        value = None
    if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], str)):
        raise DockerfileError(f'{where}: CMD {rest!r}: only CMD ["module.handler"] is understood')
    return Cmd(line=line, handler=value[0])


# --- the build context (.dockerignore) ---------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern: ``*`` and ``?`` within a segment, ``**`` across segments."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        elif pattern[index] in "[\\":
            raise DockerfileError(f".dockerignore: {pattern!r}: [...] and \\ are not understood")
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out))


class BuildContext:
    """The repository as ``docker build .`` sends it: without what .dockerignore excludes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._patterns: list[tuple[bool, re.Pattern[str]]] = []
        ignore = root / ".dockerignore"
        lines = ignore.read_text().splitlines() if ignore.is_file() else []
        for raw in lines:
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            keep = text.startswith("!")
            text = posixpath.normpath(text.removeprefix("!").strip()).lstrip("/")
            self._patterns.append((keep, _glob_regex(text)))

    def excluded(self, relative: str) -> bool:
        """Docker's rule: the last pattern matching the path or one of its parents decides."""
        parts = PurePosixPath(relative).parts
        candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
        result = False
        for keep, regex in self._patterns:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                result = not keep
        return result

    def files(self, source: str) -> Iterator[tuple[str, Path]]:
        """(path relative to ``source``, file) for what the context holds under ``source``.

        Files only: an empty directory, which COPY would create, is not (nothing imports one)."""
        base = self.root / source
        if base.is_file() or base.is_symlink():
            if not self.excluded(posixpath.normpath(source)):
                yield base.name, base
            return
        for directory, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(directory) / name
                if not self.excluded(path.relative_to(self.root).as_posix()):
                    yield path.relative_to(base).as_posix(), path


# --- the build -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRoot:
    """A built task root. Put ``sys_path`` first on the path (``run_isolated`` does)."""

    image: Path  # the image's filesystem, as far as the Dockerfile wrote to it
    path: Path  # ${LAMBDA_TASK_ROOT}: the COPYed project files, compiled
    site: Path  # the cached install (in the image: pip --target ${LAMBDA_TASK_ROOT}, same dir)
    handler: str  # CMD
    python_version: str  # the base image's (its tag)
    python: Path  # the interpreter the rehearsal installed and compiled for
    install_seconds: float  # 0.0 when the install came from the cache
    cached: bool

    @property
    def sys_path(self) -> list[Path]:
        return [self.path, self.site]


def default_cache_dir(repo: Path = REPO) -> Path:
    """Inside .venv, so ``make clean`` removes it."""
    return repo / ".venv" / "rehearsal"


def base_python() -> Path:
    """The interpreter this venv was made from (none of the venv's packages)."""
    major, minor = sys.version_info[:2]
    for name in (f"python{major}.{minor}", "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return candidate
    return Path(sys.executable)


def python_version_of(python: Path) -> str:
    """``major.minor`` of the interpreter ``python`` (it must run)."""
    version = _python_version(python)
    if version is None:
        raise DockerfileError(f"{python} does not run")
    return version


def _python_version(python: Path) -> str | None:
    try:
        result = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def lambda_python(version: str | None = None) -> Path:
    """A ``python<version>`` that runs here (default: the base image's), else ``base_python()``.

    The Lambda runtime is Python 3.12; the development machine has only 3.11 on PATH (a
    ``python3.12`` that does not run, such as a pyenv shim of a version not selected, does not
    count). A 3.12 needs torch's +cpu wheel for 3.12 too: from PyTorch's index, or in the local
    wheel folder that stands in for it.
    """
    wanted = version or parse_dockerfile(REPO / DOCKERFILE).python_version
    found = shutil.which(f"python{wanted}")
    if found is not None and _python_version(Path(found)) == wanted:
        return Path(found)
    return base_python()


def _uv() -> Path:
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        raise DockerfileError(f"no uv beside {sys.executable} (`make python-env` installs it)")
    return uv


def _image_path(image: Path, path: str) -> Path:
    normal = PurePosixPath(posixpath.normpath(path))
    if not normal.is_absolute() or ".." in normal.parts:
        raise DockerfileError(f"{path!r}: not an absolute path in the image")
    return image.joinpath(*normal.parts[1:])


def _copy(step: Copy, context: BuildContext, image: Path, where: str, log: Log) -> None:
    for source in step.sources:
        files = list(context.files(source))
        if not files:
            raise DockerfileError(
                f"{where}: COPY {source}: nothing in the build context "
                "(missing, or excluded by .dockerignore)"
            )
        if (context.root / source).is_dir():
            destination = _image_path(image, step.dest)
            for relative, path in files:
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target, follow_symlinks=False)
        else:
            target = _image_path(image, _copy_destination(step, source))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(files[0][1], target, follow_symlinks=False)
        log(f"COPY {source} -> {step.dest} ({len(files)} files)")


def _local_wheels() -> str:
    """The local wheel folder(s): $UV_FIND_LINKS (the Makefile exports it), else pip's
    ``global.find-links`` (what the Makefile reads it from)."""
    value = os.environ.get("UV_FIND_LINKS", "").strip()
    if value:
        return value
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def _index_arguments(step: PipInstall, local_wheels: str) -> list[str]:
    urls = [value for name, value in step.options if name == "--extra-index-url" and value]
    if not urls:
        return []
    if local_wheels:
        # THE ONE SUBSTITUTION: the Dockerfile's extra index (PyTorch's CPU wheels, for the
        # torch==...+cpu pin) is not reachable here; the configured local wheel folder, which
        # holds that same build, stands in for it. Every other package comes from the index, as
        # in the image. (Passed even when uv would read UV_FIND_LINKS itself: one cache key.)
        return [arg for link in local_wheels.split() for arg in ("--find-links", link)]
    # pip considers every index for every package; uv only when told to
    return [
        "--index-strategy",
        "unsafe-best-match",
        *(arg for url in urls for arg in ("--extra-index-url", url)),
    ]


def _uv_arguments(step: PipInstall, local_wheels: str) -> list[str]:
    """pip's options as uv's. Only the options in PIP_OPTIONS reach here (the parser refuses
    the others)."""
    # --no-cache-dir: pip's download cache changes nothing that gets installed (uv keeps its own).
    # pip byte-compiles what it installs unless told not to; uv only when asked.
    return ["--compile-bytecode", *_index_arguments(step, local_wheels)]


def _python_identity(python: Path) -> str:
    code = "import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_platform())"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_abandoned(cache_dir: Path) -> None:
    """Builds whose process is gone (killed mid-install) are never reused: remove them."""
    for building in cache_dir.glob("building-*"):
        pid = building.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(building, ignore_errors=True)


def _prune(cache_dir: Path, keep: int) -> None:
    installs = sorted(cache_dir.glob("site-*"), key=lambda path: path.stat().st_mtime)
    for old in installs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _install(
    step: PipInstall, image: Path, cache_dir: Path, python: Path, where: str, log: Log
) -> tuple[Path, float, bool]:
    """The install's packages, from the cache or installed into it: (directory, seconds, cached)."""
    if posixpath.normpath(step.target) != LAMBDA_TASK_ROOT:
        raise DockerfileError(
            f"{where}: pip install --target {step.target}: the rehearsal understands an install "
            f"into ${{LAMBDA_TASK_ROOT}} ({LAMBDA_TASK_ROOT}) only"
        )
    requirements = _image_path(image, step.requirements)
    if not requirements.is_file():
        raise DockerfileError(f"{where}: -r {step.requirements}: no COPY put it into the image")
    content = requirements.read_text()
    local_wheels = _local_wheels()
    arguments = _uv_arguments(step, local_wheels)
    identity = _python_identity(python)
    key_material = {
        "schema": CACHE_SCHEMA,
        "requirements": content,
        "pip options": step.options,
        "uv arguments": arguments,
        "python": identity,
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    final = cache_dir / f"site-{key}"
    if final.is_dir():
        os.utime(final)  # recently used: pruned last
        log(f"RUN pip install: cached ({final})")
        return final, 0.0, True

    cache_dir.mkdir(parents=True, exist_ok=True)
    _clear_abandoned(cache_dir)
    building = cache_dir / f"building-{key}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    count = sum(1 for row in content.splitlines() if row.strip() and not row.startswith("#"))
    command = [
        str(_uv()),
        "pip",
        "install",
        "--target",
        str(building),
        "--python",
        str(python),
        *arguments,
        "-r",
        str(requirements),
    ]
    log(
        f"RUN pip install: installing the {count} packages of {step.requirements} for Python "
        f"{identity} (torch alone is ~700 MB; later builds reuse it from {cache_dir}): "
        f"{shlex.join(command)}"
    )
    start = time.monotonic()
    try:
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise DockerfileError(f"{where}: the install failed (uv exit {result.returncode})")
        seconds = time.monotonic() - start
        try:
            building.rename(final)  # atomic: a directory named site-* is a finished install
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(building)  # a concurrent build finished first: use it
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    _prune(cache_dir, KEEP_INSTALLS)
    log(f"RUN pip install: done in {seconds:.1f} s ({final})")
    return final, seconds, False


def _remove(step: PipInstall, image: Path, where: str) -> None:
    for path in step.removes:
        local = _image_path(image, path)
        if local.is_dir():
            shutil.rmtree(local)
        elif local.exists() or local.is_symlink():
            local.unlink()
        elif not step.removes_force:
            raise DockerfileError(f"{where}: rm {path}: no such file")


def _compileall(step: CompileAll, image: Path, python: Path, where: str, log: Log) -> None:
    paths = [str(_image_path(image, path)) for path in step.paths]
    command = [str(python), "-m", "compileall", *step.options, *paths]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        raise DockerfileError(f"{where}: compileall failed (exit {result.returncode}):\n{output}")
    log(f"RUN python -m compileall {' '.join(step.paths)}")


def _top_level_names(directory: Path) -> set[str]:
    names = set()
    for entry in directory.iterdir():
        if entry.name in ("__pycache__", "bin") or entry.name.endswith((".dist-info", ".pth")):
            continue
        names.add(entry.name.split(".", 1)[0] if entry.is_file() else entry.name)
    return names


def build_task_root(
    repo: Path,
    cache_dir: Path,
    python: Path,
    *,
    dockerfile: str | Path = DOCKERFILE,
    into: Path | None = None,
    log: Log = _log_stderr,
) -> TaskRoot:
    """Perform the Dockerfile's steps, in order, against a fresh directory.

    ``dockerfile`` is relative to ``repo`` (the build context) unless absolute. ``into``
    (created; it must not exist) holds the image's filesystem; by default a new
    temporary directory, which the caller removes. The install is cached under ``cache_dir``;
    the COPY and compileall steps run afresh on every call.
    """
    parsed = parse_dockerfile(repo / dockerfile)
    if into is None:
        image = Path(tempfile.mkdtemp(prefix="latina-ml-image-"))
    else:
        into.mkdir(parents=True)
        image = into
    context = BuildContext(repo)
    site: Path | None = None
    seconds, cached = 0.0, True
    for step in parsed.steps:
        where = f"{parsed.path}:{step.line}"
        if isinstance(step, From):
            log(f"FROM {step.image}: Python {step.python_version}; rehearsing with {python}")
        elif isinstance(step, Copy):
            _copy(step, context, image, where, log)
        elif isinstance(step, PipInstall):
            site, seconds, cached = _install(step, image, cache_dir, python, where, log)
            _remove(step, image, where)
        elif isinstance(step, CompileAll):
            _compileall(step, image, python, where, log)
    if site is None:
        raise DockerfileError(f"{parsed.path}: no pip install step")
    task_root = _image_path(image, LAMBDA_TASK_ROOT)
    task_root.mkdir(parents=True, exist_ok=True)
    both = _top_level_names(task_root) & _top_level_names(site)
    if both:
        raise DockerfileError(
            f"{parsed.path}: {sorted(both)} both installed and COPYed: the image merges them in "
            "one directory, the rehearsal's two directories would not"
        )
    module = parsed.handler.rpartition(".")[0]
    module_path = task_root.joinpath(*module.split("."))
    if not (module_path.with_suffix(".py").is_file() or (module_path / "__init__.py").is_file()):
        raise DockerfileError(f"{parsed.path}: CMD {parsed.handler}: no module {module} in it")
    return TaskRoot(
        image=image,
        path=task_root,
        site=site,
        handler=parsed.handler,
        python_version=parsed.python_version,
        python=python,
        install_seconds=seconds,
        cached=cached,
    )


def run_isolated(
    root: TaskRoot,
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as the image would: ``python -I -S`` (no site-packages, no PYTHON* variables,
    not the current directory) with only the task root and its install on ``sys.path``, in the
    task root (Lambda's working directory). ``args`` become ``sys.argv[1:]``."""
    preamble = f"import sys; sys.path[:0] = {[str(path) for path in root.sys_path]!r}\n"
    environment = {"PATH": os.environ.get("PATH", ""), "LAMBDA_TASK_ROOT": str(root.path)}
    environment.update(env or {})
    return subprocess.run(
        [str(root.python), "-I", "-S", "-c", preamble + code, *args],
        capture_output=True,
        text=True,
        cwd=root.path,
        env=environment,
        timeout=timeout,
        check=False,
    )


def main() -> None:
    into = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    root = build_task_root(REPO, default_cache_dir(), lambda_python(), into=into)
    print(json.dumps({"task_root": str(root.path), "site": str(root.site)}, indent=2))


if __name__ == "__main__":
    main()

"""The rehearsal runs the zip, not the source tree: a module the zip lacks fails it by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.rehearsal.lambda_host import InvocationError, LambdaFunction


def _without(code: Path, module: str, target: Path) -> Path:
    """``code`` with ``module`` (a path inside the zip) removed: the other top-level entries
    linked, the one holding the module copied."""
    top = module.split("/", 1)[0]
    target.mkdir()
    for entry in code.iterdir():
        if entry.name == top:
            shutil.copytree(entry, target / top)
        else:
            (target / entry.name).symlink_to(entry)
    (target / module).unlink()
    return target


@pytest.mark.parametrize("handler", ["gateway.handler.http", "gateway.handler.worker"])
async def test_a_module_the_zip_forgot_fails_the_function_naming_it(
    gateway_code: Path, runtime_python: tuple[Path, str], tmp_path: Path, handler: str
) -> None:
    broken = _without(gateway_code, "gateway/flows/rating.py", tmp_path / "task")
    function = LambdaFunction(
        "latina-dev-broken", handler, [broken], {}, runtime_python[0], tmp_path, timeout=60
    )
    await function.start()
    try:
        with pytest.raises(InvocationError, match=r"No module named 'gateway\.flows\.rating'"):
            await function.invoke({"source": "latina", "action": "drain"})
    finally:
        await function.stop()


async def test_the_unzipped_package_holds_what_the_functions_import(
    gateway_code: Path, runtime_python: tuple[Path, str], tmp_path: Path
) -> None:
    # the same container, nothing removed, starts (local settings: no SSM needed to import)
    function = LambdaFunction(
        "latina-dev-probe",
        "gateway.handler.migrate",
        [gateway_code],
        {"LATINA_ENV": "local", "DATABASE_URL": "postgresql://127.0.0.1:9/nothing"},
        runtime_python[0],
        tmp_path,
        timeout=60,
    )
    await function.start()
    try:
        with pytest.raises(InvocationError) as failed:
            await function.invoke({})
        # it got past every import to the database, which is not there
        assert "No module named" not in str(failed.value)
        assert function.cold_start.init_seconds is not None
    finally:
        await function.stop()

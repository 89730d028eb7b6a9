"""``latina ml``: run the ML service, train its reward model (also ``python -m ml_service.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from shared.cli import run_or_exit, settings_or_exit
from shared.settings import DEV_ML_SERVICE_TOKEN, Settings, is_loopback
from shared.wire.ml import RewardTrainResponse

app = typer.Typer(help="The ML service.", no_args_is_help=True)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default ML_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default ML_PORT, 8001)")] = None,
) -> None:
    """Run the ML service with uvicorn (what `make run` starts on 8001)."""
    settings = settings_or_exit()
    bind = host or settings.ml_host
    if not is_loopback(bind) and settings.ml_service_token == DEV_ML_SERVICE_TOKEN:
        typer.secho(
            f"error: --host {bind} is reachable from other machines: set ML_SERVICE_TOKEN"
            " (the development token is public)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    uvicorn.run(
        "ml_service.app:app_from_environment",
        factory=True,
        host=bind,
        port=port or settings.ml_port,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command("train-reward")
def train_reward(
    study: Annotated[str, typer.Option(help="the study whose observations to learn from")] = "",
) -> None:
    """Train the phase-2 reward model on every observation with image features, showing
    progress, and make it the current version (what POST /ml/reward/train does)."""
    # torch and botorch load only for this command: the rest of `latina` starts without them
    from ml_service.resources import Resources
    from ml_service.reward import flows as reward

    async def work(settings: Settings) -> RewardTrainResponse:
        resources = Resources(settings)
        last = [0]

        def progress(epoch: int, epochs: int, loss: float) -> None:
            percent = 100 * epoch // epochs
            if percent >= last[0] + 10 or epoch == epochs:
                last[0] = percent
                typer.echo(f"  epoch {epoch:>4}/{epochs}  ({percent:3d}%)  loss {loss:.4f}")

        try:
            typer.echo(f"training the reward model of study {study or settings.ml_study!r} ...")
            return await reward.train(
                await resources.pool(), resources.reward, study or settings.ml_study, progress
            )
        finally:
            await resources.close()

    result = run_or_exit(work)
    accuracy, mae = result.pairwise_accuracy, result.mae
    typer.echo(
        f"reward model {result.version}: {result.n_samples} samples, held-out pairwise "
        f"accuracy {'-' if accuracy is None else f'{accuracy:.3f}'}, "
        f"MAE {'-' if mae is None else f'{mae:.3f}'}"
    )


if __name__ == "__main__":
    app()

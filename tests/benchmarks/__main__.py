"""Run the benchmarks and print their figures: ``python -m tests.benchmarks [--quick] [--only]``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from tests.benchmarks import (
    bench_gateway_auth,
    bench_load,
    bench_ml_optimizer,
    bench_reward,
    bench_training,
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "smoke-test sizes (ML: 3 seeds, studies of 10/50; training: 10 uploads, 60 ratings;"
            " reward: 200 samples, 100 epochs; load: fewer loops and half the concurrency of"
            " (b), (d), (e))"
        ),
    )
    parser.add_argument(
        "--only",
        choices=["ml", "ml-efficiency", "gateway", "train", "reward", "load"],
        help=(
            "run one benchmark (ml-efficiency: only the optimizer's sample efficiency; load: many"
            " trainers and ML clients at once on the stack `make run` starts, issue 15)"
        ),
    )
    args = parser.parse_args(argv)
    if args.only in (None, "gateway"):
        asyncio.run(bench_gateway_auth.main())
    if args.only in (None, "ml", "ml-efficiency"):
        asyncio.run(
            bench_ml_optimizer.main(quick=args.quick, efficiency_only=args.only == "ml-efficiency")
        )
    if args.only in (None, "train"):
        asyncio.run(bench_training.main(quick=args.quick))
    if args.only in (None, "reward"):
        asyncio.run(bench_reward.main(quick=args.quick))
    if args.only in (None, "load"):
        asyncio.run(bench_load.main(quick=args.quick))


if __name__ == "__main__":
    main()

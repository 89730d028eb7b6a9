"""Run every benchmark and print its figures."""

from __future__ import annotations

import asyncio

from tests.benchmarks import bench_gateway_auth


def main() -> None:
    asyncio.run(bench_gateway_auth.main())


if __name__ == "__main__":
    main()

"""Check the gateway's Lambda zip that `serverless package` built: size and contents.

Lambda refuses a function whose code unzips to more than 250 MB, and the gateway needs its
templates, prompts, migrations and the UI's vendored chart.js at run time.
Usage: python infra/check_package.py .serverless/latina.zip
"""

from __future__ import annotations

import sys
import zipfile

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
FORBIDDEN_TOP = ("ml_service", "tests", "torch", "scipy", ".venv", "node_modules")


def main(path: str) -> int:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    names = {info.filename for info in infos}
    size = sum(info.file_size for info in infos)
    problems = [f"missing {name}" for name in REQUIRED if name not in names]
    tops = {name.split("/", 1)[0] for name in names}
    problems += [f"must not ship {top}/" for top in FORBIDDEN_TOP if top in tops]
    if size > LIMIT_BYTES:
        problems.append(f"{size / 2**20:.1f} MiB unzipped is over Lambda's 250 MiB")
    print(f"{path}: {len(infos)} files, {size / 2**20:.1f} MiB unzipped (limit 250 MiB)")
    for problem in problems:
        print(f"  problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

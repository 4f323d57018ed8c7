"""``python -m vectorstore --data-dir D --port P``: serve D's collections over
Qdrant's gRPC API until SIGTERM. ``--port 0`` binds a free port, reported in
``--ready-file`` (and on stdout)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from kit.logs import configure_logging
from vectorstore.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vectorstore", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6334, help="Qdrant's gRPC port by default")
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument("--grace-seconds", type=float, default=10.0)
    parser.add_argument("--log-level", default=os.environ.get("VECTOROPS_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    configure_logging("vectorstore", args.log_level)
    asyncio.run(serve(args.data_dir, args.host, args.port, args.ready_file, args.grace_seconds))


if __name__ == "__main__":
    main()

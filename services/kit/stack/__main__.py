"""``make run``: the whole stack on this machine until Ctrl-C.

Data (Postgres, JetStream, tokens, logs) lives in one folder, ``.vectorops/``
by default, and a second run reuses it. ``VECTOROPS_STACK_POSTGRES_DSN`` and
``VECTOROPS_STACK_NATS_URL`` point the stack at an existing Postgres or NATS.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from kit.config import ServiceName
from kit.stack.launcher import Stack, StackError, StackOptions


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"VECTOROPS_STACK_{name}", default) or None


def _parse(argv: list[str]) -> StackOptions:
    parser = argparse.ArgumentParser(prog="vectorops-stack", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", ".vectorops")))
    parser.add_argument("--postgres-dsn", default=_env("POSTGRES_DSN"))
    parser.add_argument("--postgres-port", type=int, default=int(_env("POSTGRES_PORT", "55432")))
    parser.add_argument("--nats-url", default=_env("NATS_URL"))
    parser.add_argument("--nats-port", type=int, default=int(_env("NATS_PORT", "4222")))
    parser.add_argument(
        "--ephemeral-ports", action="store_true", help="let the OS choose every port"
    )
    parser.add_argument(
        "--source-root",
        type=Path,
        action="append",
        default=[Path(p) for p in (_env("SOURCE_ROOTS") or "").split(":") if p] or None,
        help="a directory that directory sources may name (repeatable; default <data-dir>/sources)",
    )
    parser.add_argument(
        "--replicas",
        type=_replica_counts,
        action="append",
        default=[_replica_counts(_env("REPLICAS") or "")],
        help="processes per service, e.g. embedder=2,orchestrator=2 (repeatable; default 1 each)",
    )
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    if args.ephemeral_ports:
        options = StackOptions.ephemeral(data_dir)
    else:
        options = StackOptions(
            data_dir=data_dir, postgres_port=args.postgres_port, nats_port=args.nats_port
        )
    options.postgres_dsn = args.postgres_dsn
    options.nats_url = args.nats_url
    options.replicas = {service: n for counts in args.replicas for service, n in counts.items()}
    if args.source_root:
        options.source_roots = tuple(root.resolve() for root in args.source_root)
    return options


def _replica_counts(text: str) -> dict[ServiceName, int]:
    """``"embedder=2,indexer=2"`` → {EMBEDDER: 2, INDEXER: 2}."""
    counts: dict[ServiceName, int] = {}
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        name, _, number = item.partition("=")
        try:
            service, count = ServiceName(name.strip()), int(number)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected <service>=<count>, service one of "
                f"{', '.join(s.value for s in ServiceName)}"
            ) from None
        if count < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: a service runs at least 1 process")
        counts[service] = count
    return counts


def _banner(stack: Stack) -> str:
    assert stack.tokens is not None
    lines = ["", "vectorops is up.", "", f"  {'service':<13} {'gRPC':<18} metrics"]
    for service in ServiceName:
        for endpoint in stack.replica_endpoints(service):
            lines.append(f"  {service.value:<13} {endpoint.target:<18} {endpoint.metrics_url}")
    first = stack.endpoints[ServiceName.ORCHESTRATOR].target
    lines += [
        "",
        f"  postgres      {stack.postgres_dsn}",
        f"  nats          {stack.nats_url}",
        f"  logs          {stack.options.data_dir / 'logs'}",
        f"  sources       {', '.join(str(root) for root in stack.options.roots())}"
        "  (directory sources must lie here)",
        "",
        f"  dev admin token: {stack.tokens.clear['admin']}",
        f"  dev user token:  {stack.tokens.clear['user']}",
        "",
        f"  try:  .venv/bin/grpcurl -plaintext {first} list",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = _parse(sys.argv[1:] if argv is None else argv)
    stopping = threading.Event()
    # Ctrl-C, SIGTERM and SIGHUP all mean: stop everything, in order. The children
    # run in their own sessions, so only this process hears the terminal.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    stack = Stack(options)
    try:
        stack.start()
    except StackError as error:
        print(f"vectorops failed to start: {error}", file=sys.stderr, flush=True)
        return 1
    code = 0
    try:
        if not stopping.is_set():
            print(_banner(stack), flush=True)
        while not stopping.wait(1.0):
            died = stack.exited()
            for instance, status in died.items():
                print(
                    f"{instance.name} exited with code {status}:\n{stack.log_tail(instance)}",
                    file=sys.stderr,
                    flush=True,
                )
            if died:
                code = 1
                break
    finally:
        print("stopping vectorops…", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``vectorops``: parse, resolve settings, run one command, exit with a code
that says how it went (see ``cli.errors.ExitCode``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import grpc

from cli.api import Api
from cli.errors import ExitCode, UsageError, failure_from_rpc_error
from cli.output import Output
from cli.parser import build_parser
from cli.settings import CLI_SERVICES, resolve
from cli.watch import StreamEnded


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    out = Output(as_json=args.json)
    try:
        settings = resolve(
            flags={s: getattr(args, f"{s.value}_address") for s in CLI_SERVICES},
            timeout=args.timeout,
            config_flag=args.config,
            environ=os.environ,
        )
        api = Api(settings)
        try:
            return int(args.handler(args, api, out))
        finally:
            api.close()
    except UsageError as error:
        parser.exit(ExitCode.USAGE, f"vectorops: error: {error}\n")
    except grpc.RpcError as error:
        failure = failure_from_rpc_error(error)
        out.note(json.dumps(failure.as_dict()) if out.as_json else failure.as_text())
        return failure.exit_code
    except StreamEnded as error:
        out.note(f"error: {error}")
        return ExitCode.UNAVAILABLE
    except KeyboardInterrupt:
        out.note("\ninterrupted")
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

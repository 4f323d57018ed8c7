"""The command line: ``vectorops [OPTIONS] NOUN VERB [ARGS]``.

The global options (``--json``, addresses, timeout, config) are accepted both
before the noun and after the verb, so ``vectorops collections list --json``
works as well as ``vectorops --json collections list``.
"""

from __future__ import annotations

import argparse

from cli.commands import NOUNS
from cli.settings import CLI_SERVICES, CONFIG_ENV, TOKEN_ENV, address_env

DESCRIPTION = f"""\
Manage vectorops collections from the shell: create and index them, add and
remove sources, reindex blue-green, watch operations, search, read the audit
log and set quotas.

The bearer token comes from ${TOKEN_ENV} or the config file
(${CONFIG_ENV}, else ~/.config/vectorops/config.toml: token = "...").
`make run` prints development tokens and keeps them in .vectorops/dev-tokens.json.
"""

EPILOG = """\
exit codes: 0 ok, 1 other error, 2 usage or config error, 3 not found,
4 invalid argument, 5 unauthenticated or permission denied, 6 unavailable or
deadline exceeded, 7 conflict (already exists, failed precondition), 8 quota
exceeded, 9 watched operation FAILED, 10 watched operation CANCELLED, 11 audit
chain broken, 130 interrupted.
"""


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On the leaves the defaults are SUPPRESS, so a value given before the noun
    # is not overwritten by the leaf's default.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for scripts"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=default(None),
        metavar="SECONDS",
        help="deadline of each call (default 30)",
    )
    group.add_argument(
        "--config", default=default(None), metavar="PATH", help=f"config file (or ${CONFIG_ENV})"
    )
    for service in CLI_SERVICES:
        group.add_argument(
            f"--{service.value}",
            dest=f"{service.value}_address",
            default=default(None),
            metavar="HOST:PORT",
            help=f"{service.value} address (or ${address_env(service)})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vectorops",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")
    for noun in NOUNS:
        noun.register(nouns, common)
    return parser

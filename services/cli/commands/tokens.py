"""``vectorops token create|list|revoke``: run-time bearer tokens (admins).

``create`` prints the clear token once; nothing can show it again.
"""

from __future__ import annotations

import argparse

from google.protobuf import duration_pb2

from cli.api import Api
from cli.commands.common import add_request_id, request_id
from cli.errors import ExitCode, UsageError
from cli.output import Output, enum_choices, enum_name, enum_value, fields, table, when
from vectorops.common.v1 import principal_pb2
from vectorops.orchestrator.v1 import token_service_pb2 as api_pb2

ROLE_PREFIX = "ROLE_"
STATE_PREFIX = "TOKEN_STATE_"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    noun = nouns.add_parser("token", help="create, list and revoke bearer tokens (admins)")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser("create", parents=[common], help="a new token; printed once")
    create.add_argument("principal", help="who the token authenticates (a user's owner id)")
    create.add_argument(
        "--role", default="user", choices=enum_choices(principal_pb2.Role, ROLE_PREFIX)
    )
    create.add_argument("--description", default="")
    create.add_argument(
        "--ttl", type=ttl, metavar="N[s|m|h|d]", help="lifetime (default: no expiry)"
    )
    add_request_id(create)
    create.set_defaults(handler=create_token)

    list_ = verbs.add_parser("list", parents=[common], help="tokens, newest first")
    list_.add_argument("--principal", default="", help="only this principal's")
    list_.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    list_.set_defaults(handler=list_tokens)

    revoke = verbs.add_parser("revoke", parents=[common], help="refused everywhere from now on")
    revoke.add_argument("token_id")
    add_request_id(revoke)
    revoke.set_defaults(handler=revoke_token)


def ttl(text: str) -> duration_pb2.Duration:
    """``90`` (seconds), ``15m``, ``12h``, ``30d``."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:], None)
    number = text[:-1] if unit else text
    try:
        seconds = int(number) * (unit or 1)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"not a duration like 90, 15m, 12h, 30d: {text!r}"
        ) from error
    return duration_pb2.Duration(seconds=seconds)


def _token_fields(token: api_pb2.Token) -> str:
    return fields(
        [
            ("id", token.id),
            ("principal", token.principal_id),
            ("role", enum_name(principal_pb2.Role, token.role, ROLE_PREFIX)),
            ("state", enum_name(api_pb2.TokenState, token.state, STATE_PREFIX)),
            ("description", token.description),
            ("created", f"{when(token.create_time)} by {token.created_by}"),
            ("expires", when(token.expire_time) if token.HasField("expire_time") else "never"),
            (
                "revoked",
                f"{when(token.revoke_time)} by {token.revoked_by}"
                if token.HasField("revoke_time")
                else "",
            ),
        ]
    )


def create_token(args: argparse.Namespace, api: Api, out: Output) -> int:
    response = api.call(
        api.tokens.CreateToken,
        api_pb2.CreateTokenRequest(
            principal_id=args.principal,
            role=enum_value(principal_pb2.Role, args.role, ROLE_PREFIX),
            description=args.description,
            ttl=args.ttl,
            request_id=request_id(args),
        ),
    )
    if out.as_json:
        out.json(response)
        return ExitCode.OK
    out.print(_token_fields(response.token))
    if response.replayed:
        out.print("retry of an earlier create: the token was shown then and cannot be again")
    else:
        out.print(f"token:     {response.bearer_token}")
        out.print("(shown once: keep it now)")
    return ExitCode.OK


def list_tokens(args: argparse.Namespace, api: Api, out: Output) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    request = api_pb2.ListTokensRequest(
        principal_id=args.principal, page_size=min(args.limit, 1000)
    )
    found = []
    while len(found) < args.limit:
        page = api.call(api.tokens.ListTokens, request)
        found += page.tokens
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    found = found[: args.limit]
    if out.as_json:
        out.json(found)
        return ExitCode.OK
    out.print(
        table(
            ("ID", "PRINCIPAL", "ROLE", "STATE", "CREATED", "EXPIRES", "DESCRIPTION"),
            [
                (
                    t.id,
                    t.principal_id,
                    enum_name(principal_pb2.Role, t.role, ROLE_PREFIX),
                    enum_name(api_pb2.TokenState, t.state, STATE_PREFIX),
                    when(t.create_time),
                    when(t.expire_time) if t.HasField("expire_time") else "never",
                    t.description,
                )
                for t in found
            ],
        )
    )
    return ExitCode.OK


def revoke_token(args: argparse.Namespace, api: Api, out: Output) -> int:
    response = api.call(
        api.tokens.RevokeToken,
        api_pb2.RevokeTokenRequest(token_id=args.token_id, request_id=request_id(args)),
    )
    if out.as_json:
        out.json(response)
    else:
        out.print(_token_fields(response.token))
    return ExitCode.OK

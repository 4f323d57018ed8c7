"""The CLI's arguments and settings: global options anywhere, the precedence of
flags, environment and config file, the token sources, and the values flags
turn into (config changes, quota limits, times, enum filters)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import grpc
import pytest

from cli.commands.audit import timestamp
from cli.commands.collections import DEFAULT_MODEL, apply_config_flags
from cli.commands.quota import limit
from cli.errors import ExitCode, UsageError, exit_code_for
from cli.output import enum_value
from cli.parser import build_parser
from cli.settings import CLI_SERVICES, TOKEN_ENV, resolve
from kit.config import ServiceName
from vectorops.common.v1 import config_pb2, operation_pb2


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_global_options_are_accepted_before_the_noun_and_after_the_verb() -> None:
    before = parse("--json", "--timeout", "5", "collections", "list")
    after = parse("collections", "list", "--json", "--timeout", "5")
    for args in (before, after):
        assert args.json is True and args.timeout == 5.0
        assert args.handler.__name__ == "list_collections"
    plain = parse("collections", "list")
    assert plain.json is False and plain.timeout is None and plain.orchestrator_address is None
    addressed = parse("search", "c1", "query text", "--indexer", "h:1")
    assert addressed.indexer_address == "h:1" and addressed.query == "query text"


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable command, as (words, its parser)."""
    children = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not children:
        yield path, parser
    for action in children:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def test_every_command_has_a_handler_function() -> None:
    leaves = dict(_leaves(build_parser()))
    assert {" ".join(words) for words in leaves} == {
        "collections create", "collections list", "collections get", "collections update",
        "collections delete", "sources add", "sources remove", "reindex", "operations list",
        "operations get", "operations watch", "operations cancel", "search", "audit list",
        "audit verify", "quota get", "quota set", "token create", "token list", "token revoke",
    }  # fmt: skip
    for words, leaf in leaves.items():
        handler = leaf.get_default("handler")
        assert inspect.isfunction(handler), (words, handler)
        assert list(inspect.signature(handler).parameters) == ["args", "api", "out"], words


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["collections"],
        ["collections", "frobnicate"],
        ["operations", "list", "--status", "exploded"],
        ["collections", "create", "x", "--no-instruction", "--instruction", "y"],
        ["quota", "set", "bob", "--vectors", "-3"],
        ["audit", "list", "--since", "yesterday"],
    ],
)
def test_bad_usage_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == ExitCode.USAGE == 2


def test_create_collects_sources_and_filters() -> None:
    args = parse(
        "collections", "create", "docs", "--source", "a", "--source", "/b",
        "--include", "**/*.md", "--exclude", "drafts/**", "--chunk-size", "200",
    )  # fmt: skip
    assert args.source == ["a", "/b"] and args.include == ["**/*.md"]
    assert args.exclude == ["drafts/**"] and args.chunk_size == 200
    assert args.model == DEFAULT_MODEL and args.watch is False


def test_config_flags_change_only_what_they_name() -> None:
    live = config_pb2.CollectionConfig(
        embedding_model="m1", dimension=384, chunk_size=128, chunk_overlap=16, instruction="q: "
    )
    target = config_pb2.CollectionConfig()
    target.CopyFrom(live)
    apply_config_flags(target, parse("reindex", "c", "--chunk-size", "256"))
    assert (target.chunk_size, target.chunk_overlap, target.dimension) == (256, 16, 384)
    assert target.instruction == "q: " and target.embedding_model == "m1"

    apply_config_flags(target, parse("reindex", "c", "--model", "m2", "--quantization", "int8"))
    # A new model has its own dimension: the server looks it up.
    assert target.embedding_model == "m2" and target.dimension == 0
    assert target.quantization == config_pb2.QUANTIZATION_INT8

    apply_config_flags(target, parse("reindex", "c", "--no-instruction"))
    assert target.HasField("instruction") and target.instruction == ""
    apply_config_flags(target, parse("reindex", "c", "--default-instruction"))
    assert not target.HasField("instruction")


def test_quota_limits_take_numbers_or_unlimited() -> None:
    assert limit("5000") == 5000
    assert limit("unlimited") is None and limit("None") is None
    args = parse("quota", "set", "bob", "--vectors", "10", "--collections", "unlimited")
    assert args.max_vectors == 10 and args.max_collections is None
    # Flags not given keep a sentinel, so they stay out of the update mask.
    assert args.max_stored_bytes is not None and not isinstance(args.max_stored_bytes, int)


def test_times_are_iso_and_utc_unless_they_say_otherwise() -> None:
    assert timestamp("2026-01-31T12:00:00Z").ToSeconds() == 1_769_860_800
    assert timestamp("2026-01-31T12:00:00").ToSeconds() == 1_769_860_800
    assert timestamp("2026-01-31T13:00:00+01:00").ToSeconds() == 1_769_860_800


def test_enum_flags_map_to_proto_values() -> None:
    assert enum_value(operation_pb2.OperationStatus, "completed", "OPERATION_STATUS_") == (
        operation_pb2.OPERATION_STATUS_COMPLETED
    )
    assert enum_value(operation_pb2.OperationType, "remove-source", "OPERATION_TYPE_") == (
        operation_pb2.OPERATION_TYPE_REMOVE_SOURCE
    )


# -- settings ----------------------------------------------------------------------------------


def settings(environ: dict[str, str], flags=None, timeout=None, config_flag=None):
    return resolve(flags=flags or {}, timeout=timeout, config_flag=config_flag, environ=environ)


def test_defaults_are_the_design_ports_and_no_token(tmp_path: Path) -> None:
    found = settings({"HOME": str(tmp_path)})
    assert found.token is None and found.timeout_seconds == 30.0
    assert found.addresses == {
        ServiceName.ORCHESTRATOR: "127.0.0.1:50051",
        ServiceName.INDEXER: "127.0.0.1:50052",
        ServiceName.RESOURCES: "127.0.0.1:50054",
        ServiceName.AUDIT: "127.0.0.1:50055",
    }
    assert set(found.addresses) == set(CLI_SERVICES)


def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "vectorops"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(
        'token = "from-file"\ntimeout_seconds = 7\n'
        '[addresses]\norchestrator = "file:1"\nindexer = "file:2"\naudit = "file:5"\n'
    )
    environ = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "VECTOROPS_INDEXER_ADDRESS": "env:2",
        "VECTOROPS_AUDIT_ADDRESS": "env:5",
    }
    found = settings(environ, flags={ServiceName.AUDIT: "flag:5"})
    assert found.addresses[ServiceName.ORCHESTRATOR] == "file:1"
    assert found.addresses[ServiceName.INDEXER] == "env:2"
    assert found.addresses[ServiceName.AUDIT] == "flag:5"
    assert found.addresses[ServiceName.RESOURCES] == "127.0.0.1:50054"
    assert found.token == "from-file" and found.timeout_seconds == 7.0
    assert settings({**environ, TOKEN_ENV: " from-env "}, timeout=2).token == "from-env"
    assert settings(environ, timeout=2).timeout_seconds == 2.0


def test_token_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("secret-token\n")
    config = tmp_path / "cli.toml"
    config.write_text('token_file = "admin.token"\n')
    assert settings({"VECTOROPS_CONFIG": str(config)}).token == "secret-token"
    assert settings({}, config_flag=str(config)).token == "secret-token"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token = ", "config file"),
        ('tokn = "x"\n', "unknown keys tokn"),
        ('[addresses]\nembedder = "x"\n', "unknown keys addresses.embedder"),
        ("addresses = 3\n", "must be a table"),
        ("timeout_seconds = -1\n", "positive"),
        ('token_file = "nope"\n', "token_file"),
    ],
)
def test_a_bad_config_file_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=message):
        settings({"VECTOROPS_CONFIG": str(config)})


def test_a_named_config_file_must_exist_the_default_one_need_not(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        settings({"VECTOROPS_CONFIG": str(tmp_path / "missing.toml")})
    assert settings({"XDG_CONFIG_HOME": str(tmp_path / "empty")}).token is None


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.NOT_FOUND, 3),
        (grpc.StatusCode.INVALID_ARGUMENT, 4),
        (grpc.StatusCode.UNAUTHENTICATED, 5),
        (grpc.StatusCode.PERMISSION_DENIED, 5),
        (grpc.StatusCode.UNAVAILABLE, 6),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 6),
        (grpc.StatusCode.FAILED_PRECONDITION, 7),
        (grpc.StatusCode.ALREADY_EXISTS, 7),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 8),
        (grpc.StatusCode.INTERNAL, 1),
        (grpc.StatusCode.UNIMPLEMENTED, 1),
        (None, 1),
    ],
)
def test_each_failure_class_has_its_exit_code(code, exit_code: int) -> None:
    assert exit_code_for(code) == exit_code

"""TLS: a stack whose every service serves TLS with certificates of a throwaway
CA, and requires client certificates it signed (mTLS). The services' calls to
one another (admission, query embedding, the reindex switch) go over mTLS too:
an INDEX, a search and a REINDEX only succeed if they do. Plaintext, a client
without a certificate, and a certificate of another CA are all turned away."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest
import trustme
from api import Client, config, directory
from corpus import write_text_corpus
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kit.config import ServiceName
from kit.grpc.tls import TlsFiles
from kit.stack.launcher import SERVICES, Stack, StackOptions, health_status
from vectorops.common.v1 import operation_pb2

pytestmark = pytest.mark.integration


def _write_identity(ca: trustme.CA, folder: Path, name: str) -> TlsFiles:
    """A certificate for 127.0.0.1/localhost signed by ``ca``, as PEM files."""
    issued = ca.issue_cert("127.0.0.1", "localhost", common_name=name)
    cert, key, ca_file = folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    return TlsFiles(cert, key, ca_file)


@pytest.fixture(scope="module")
def tls_stack(postgres, triton_host):
    folder = Path(tempfile.mkdtemp(prefix="vo-tls-"))
    folder.chmod(0o755)
    ca = trustme.CA()
    options = StackOptions.ephemeral(folder / "stack")
    options.postgres_dsn = postgres.create_database(f"tls_{uuid.uuid4().hex[:8]}")
    # A NATS of its own (started by the stack): the shared one carries the shared
    # stack's commands, which these services must not consume.
    options.tls = _write_identity(ca, folder, "service")
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton_host.url,
        "VECTOROPS_ORCHESTRATOR_CLEANUP_BASE_DELAY_SECONDS": "1",
        "VECTOROPS_INDEXER_CLEANUP_MIN_STAGING_AGE_SECONDS": "0",
    }
    stack = Stack(options)
    stack.start()
    try:
        yield stack, ca, folder
    finally:
        stack.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _credentials(identity: TlsFiles) -> grpc.ChannelCredentials:
    return identity.channel_credentials()


def test_operations_and_search_run_over_mutual_tls(tls_stack) -> None:
    stack, ca, folder = tls_stack
    client = Client(
        stack, stack.tokens.clear["user"], _credentials(_write_identity(ca, folder, "backend"))
    )
    try:
        root = stack.options.roots()[0] / "tls"
        write_text_corpus(root, 6, 120)
        created = client.create("tls-docs", config(chunk_size=48), [directory(str(root))])
        client.finish(created.operation.id)
        collection_id = created.collection.id
        assert client.search(collection_id, "the").hits

        # The switch is the indexer calling the orchestrator's CompleteReindex.
        before = client.get(collection_id).generation
        lenient = operation_pb2.ValidationThresholds(min_topk_overlap=0.05)
        reindexed = client.reindex(collection_id, config(chunk_size=64), before, lenient)
        client.finish(reindexed.id)
        assert client.get(collection_id).generation == before + 1
        assert client.search(collection_id, "the").hits
    finally:
        client.close()


def _health(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode | None:
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            return error.code()
    return None


def test_every_service_turns_away_plaintext_and_unknown_clients(tls_stack) -> None:
    stack, ca, folder = tls_stack
    trusted = _credentials(_write_identity(ca, folder, "prober"))
    stranger_folder = folder / "stranger"
    stranger_folder.mkdir()
    stranger = _credentials(_write_identity(trustme.CA(), stranger_folder, "stranger"))
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    for service in SERVICES:
        target = stack.endpoints[service].target
        assert (
            health_status(target, credentials=trusted) == health_pb2.HealthCheckResponse.SERVING
        ), service
        for name, credentials in [
            ("plaintext", None),
            ("no client certificate", no_client_cert),
            ("another CA's certificate", stranger),
        ]:
            assert _health(target, credentials) == grpc.StatusCode.UNAVAILABLE, (service, name)


def test_settings_refuse_half_a_tls_configuration(tmp_path) -> None:
    from pydantic import ValidationError

    from kit.config import Settings

    cert = tmp_path / "c.pem"
    with pytest.raises(ValidationError, match="go together"):
        Settings(service=ServiceName.AUDIT, tls_cert_file=cert)
    with pytest.raises(ValidationError, match="needs a certificate"):
        Settings(service=ServiceName.AUDIT, tls_ca_file=cert)

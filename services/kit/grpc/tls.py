"""TLS credentials from PEM files: what a server serves with, and what a call to
another service presents and trusts.

One certificate per process serves both ends: it is the server's certificate,
and, when a CA is configured, the client certificate of the calls this process
makes (mTLS), each side verifying the other against that CA. Without a CA the
servers still serve TLS (a certificate from a public CA) and calls trust the
system's roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.ca_file is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=self._ca(),
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        if not self.mutual:
            return grpc.ssl_channel_credentials()
        return grpc.ssl_channel_credentials(
            root_certificates=self._ca(),
            private_key=self.key_file.read_bytes(),
            certificate_chain=self.cert_file.read_bytes(),
        )

    def _ca(self) -> bytes | None:
        return self.ca_file.read_bytes() if self.ca_file is not None else None


def tls_files(
    cert_file: Path | None, key_file: Path | None, ca_file: Path | None
) -> TlsFiles | None:
    """The configured files, or None when TLS is off (no certificate)."""
    if cert_file is None or key_file is None:
        return None
    return TlsFiles(cert_file, key_file, ca_file)


def channel_credentials(tls: TlsFiles | None) -> grpc.ChannelCredentials | None:
    """What calls to the other services use: None (plaintext) when TLS is off."""
    return tls.channel_credentials() if tls is not None else None

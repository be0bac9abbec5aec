"""gRPC channel credentials towards the inference gateway: TLS against our CA, with a client certificate (mTLS)."""

from __future__ import annotations

from pathlib import Path

import grpc

from services.bus import permissions
from services.runtime.settings import RuntimeSettings
from services.security.local import LocalSecurity


def gateway_credentials(settings: RuntimeSettings) -> grpc.ChannelCredentials | None:
    """None (plaintext) unless CONCLAVE_GATEWAY_TLS_CA is set; the client certificate is optional for TLS and
    required by a gateway that runs mTLS."""
    if settings.gateway_tls_ca is None:
        return None
    cert = key = None
    if settings.gateway_tls_cert is not None and settings.gateway_tls_key is not None:
        cert, key = settings.gateway_tls_cert.read_bytes(), settings.gateway_tls_key.read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=settings.gateway_tls_ca.read_bytes(),
                                        private_key=key, certificate_chain=cert)


def local_gateway_credentials(state_dir: Path) -> grpc.ChannelCredentials | None:
    """For command-line tools: the environment's settings, else the admin certificate `conclave up` made."""
    settings = RuntimeSettings()
    local = LocalSecurity(state_dir / "security")
    if settings.gateway_tls_ca is None and local.ca_file.exists():
        cert, key = local.client_cert(permissions.ADMIN)
        settings = settings.model_copy(update={"gateway_tls_ca": local.ca_file, "gateway_tls_cert": cert,
                                               "gateway_tls_key": key})
    return gateway_credentials(settings)

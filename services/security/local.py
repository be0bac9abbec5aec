"""The local security material `conclave up` keeps in its state dir, created on first run only.

    <state>/security/            mode 0700
      ca.crt  ca.key             the local CA (ca.crt is what clients trust)
      nats-server.crt/.key       nats-server's TLS certificate (localhost, 127.0.0.1, ::1)
      gateway.crt/.key           the inference gateway's gRPC certificate
      clients/<user>.crt/.key    gRPC client certificates (mTLS towards the gateway), one per service
      nats/<user>.json           one NATS credential per user of services/bus/permissions.py:
                                 {"user": ..., "password": ...}; `client.json` is the one for your programs
      pod-api-key                the bearer key the gateway sends to model pods

Every private key, password and API key is written with mode 0600. Nothing is regenerated once it exists,
except a certificate within 30 days of its end.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.bus import permissions
from services.security import pki

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
RENEW_DAYS = 30.0


def write_private(path: Path, data: bytes) -> None:
    """Creates `path` with mode 0600 from the start (no window where another user could read it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class NatsCredential:
    user: str
    password: str

    @classmethod
    def load(cls, path: Path) -> NatsCredential:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(user=data["user"], password=data["password"])


@dataclass(frozen=True)
class LocalSecurity:
    root: Path

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    def cert(self, name: str) -> tuple[Path, Path]:
        return self.root / f"{name}.crt", self.root / f"{name}.key"

    def client_cert(self, user: str) -> tuple[Path, Path]:
        return self.root / "clients" / f"{user}.crt", self.root / "clients" / f"{user}.key"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    def nats_credential(self, user: str) -> NatsCredential:
        return NatsCredential.load(self.nats_dir / f"{user}.json")

    def nats_env(self) -> dict[str, str]:
        """CONCLAVE_* settings with which a service finds its NATS credential and trusts the server."""
        return {"CONCLAVE_NATS_CREDENTIALS_DIR": str(self.nats_dir), "CONCLAVE_NATS_TLS_CA": str(self.ca_file)}

    def gateway_client_env(self, service: str) -> dict[str, str]:
        """CONCLAVE_* settings with which `service` calls the gateway over mTLS with its own certificate."""
        cert, key = self.client_cert(service)
        return {"CONCLAVE_GATEWAY_TLS_CA": str(self.ca_file), "CONCLAVE_GATEWAY_TLS_CERT": str(cert),
                "CONCLAVE_GATEWAY_TLS_KEY": str(key)}

    def gateway_server_env(self) -> dict[str, str]:
        """CONCLAVE_* settings with which the gateway serves gRPC over mTLS (client certificates of our CA)."""
        cert, key = self.cert("gateway")
        return {"CONCLAVE_GRPC_SERVER_CERT": str(cert), "CONCLAVE_GRPC_SERVER_KEY": str(key),
                "CONCLAVE_GRPC_CLIENT_CA": str(self.ca_file)}

    def service_env(self, service: str) -> dict[str, str]:
        """Everything `service` needs to reach NATS and the gateway as itself; the gateway also serves mTLS."""
        env = {**self.nats_env(), **self.gateway_client_env(service)}
        if service == "inference":
            env.update(self.gateway_server_env())
        return env

    def nats_passwords(self) -> dict[str, str]:
        return {u: self.nats_credential(u).password for u in permissions.USERS}

    @property
    def pod_api_key_file(self) -> Path:
        return self.root / "pod-api-key"

    @classmethod
    def ensure(cls, root: Path) -> LocalSecurity:
        """Creates whatever is missing under `root` and returns it; idempotent and cheap once done."""
        sec = cls(root)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        ca_key = root / "ca.key"
        if not sec.ca_file.exists() or not ca_key.exists():
            ca = pki.make_ca()
            write_private(ca_key, ca.key_pem)
            sec.ca_file.write_bytes(ca.cert_pem)
        ca = pki.KeyPair(sec.ca_file.read_bytes(), ca_key.read_bytes())
        for name in ("nats-server", "gateway"):
            sec._ensure_leaf(ca, sec.cert(name), name, server=True)
        for user in (*permissions.SERVICE_USERS, permissions.ADMIN):
            sec._ensure_leaf(ca, sec.client_cert(user), user, server=False)
        for user in permissions.USERS:
            path = sec.nats_dir / f"{user}.json"
            if not path.exists():
                body = {"user": user, "password": secrets.token_urlsafe(24)}
                write_private(path, json.dumps(body).encode())
        if not sec.pod_api_key_file.exists():
            write_private(sec.pod_api_key_file, secrets.token_urlsafe(32).encode())
        return sec

    def _ensure_leaf(self, ca: pki.KeyPair, paths: tuple[Path, Path], cn: str, *, server: bool) -> None:
        crt, key = paths
        if crt.exists() and key.exists() and pki.days_left(crt.read_bytes()) > RENEW_DAYS:
            return
        leaf = pki.issue(ca, cn, hosts=LOCAL_HOSTS if server else (), server=server)
        write_private(key, leaf.key_pem)
        crt.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        crt.write_bytes(leaf.cert_pem)

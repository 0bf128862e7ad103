"""A throw-away CA and a server certificate for 127.0.0.1, made with the openssl binary.

For webhook servers in the e2e tests: the API server (emulator or real) verifies the
webhook's certificate against the `caBundle` of the MutatingWebhookConfiguration, so the
test needs a CA of its own. `cryptography` is not among our dependencies; the openssl
command line is on every machine that builds Python, and the tests that need it skip
with a clear reason where it is missing.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path

    @property
    def ca_bundle(self) -> str:
        """The CA certificate as a webhook configuration's `caBundle` (base64 PEM)."""
        return base64.b64encode(self.ca_cert.read_bytes()).decode()

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def make_tls(directory: Path, ip: str = "127.0.0.1") -> TlsFiles:
    """A CA and a server certificate (SAN `IP:<ip>`) signed by it, valid for a day."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:{ip}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert, "-days", "1",
         "-subj", "/CN=migweaver-e2e-ca",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={ip}"],
        ["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", extensions],
    ]  # fmt: skip
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=30)
    return TlsFiles(ca_cert, cert, key)

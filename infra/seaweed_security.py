"""SeaweedFS's own listeners closed to everyone but SeaweedFS: mutual TLS and signed requests.

Only the S3 port is for clients (and it checks their S3 keys). The master, volume and filer
listeners (HTTP and gRPC) would otherwise let any local user, or any container on the compose
network, rewrite manifests, aliases and blobs behind the registry's back. Each start writes a
fresh private CA, one certificate for SeaweedFS's own components (client and server), JWT
signing keys, and the `security.toml` that turns them on, into a folder only this user can read;
SeaweedFS reads `./security.toml`, so it is started in that folder. A client without the
certificate cannot finish a TLS handshake on those ports.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
from pathlib import Path

__all__ = ["COMPONENTS", "write_security_config"]

COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker")
COMMON_NAME = "seaweedfs"


def _certificates(folder: Path) -> None:
    """ca.crt, and seaweedfs.crt/.key signed by it (valid as server and client, 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def named(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def valid(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)
        return builder.serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        valid(x509.CertificateBuilder().subject_name(named("shipyard-seaweedfs-ca")))
        .issuer_name(named("shipyard-seaweedfs-ca"))
        .public_key(ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        valid(x509.CertificateBuilder().subject_name(named(COMMON_NAME)))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(COMMON_NAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "seaweedfs.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(folder / "seaweedfs.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)


def _toml(folder: Path) -> str:
    ca, cert, key = (str(folder / name) for name in ("ca.crt", "seaweedfs.crt", "seaweedfs.key"))
    pair = f'cert = "{cert}"\nkey = "{key}"\n'
    sections = [
        *(
            f'[jwt.{name}]\nkey = "{secrets.token_hex(24)}"\nexpires_after_seconds = 10\n'
            for name in ("signing", "filer_signing", "filer_signing.read")
        ),
        "[access]\nui = false\n",
        "[filer.expose_directory_metadata]\nenabled = false\n",
        f'[grpc]\nca = "{ca}"\n',
        *(f'[grpc.{c}]\n{pair}allowed_commonNames = "{COMMON_NAME}"\n' for c in COMPONENTS),
        f"[grpc.client]\n{pair}",
        f'[https.client]\nenabled = true\n{pair}ca = "{ca}"\n',
        *(f'[https.{c}]\n{pair}ca = "{ca}"\n' for c in ("master", "volume", "filer")),
    ]
    return "\n".join(sections)


def write_security_config(folder: Path) -> Path:
    """A fresh CA, certificate, JWT keys and security.toml in `folder` (mode 0700); returns it."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    _certificates(folder)
    fd = os.open(folder / "security.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_toml(folder))
    return folder

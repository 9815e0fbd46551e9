"""A local certificate authority for TLS between the project's services: `make certs`.

    python -m resources.certificates FOLDER [--host NAME ...] [--client NAME ...]

writes into FOLDER (created owner-only):

- `ca.pem` / `ca.key`: the authority every service and client trusts, and
  nothing else does (the key signs new certificates; keep it off servers);
- `server.pem` / `server.key`: one server certificate for the given host
  names and IP addresses (default `localhost` and `127.0.0.1`);
- `client-<name>.pem` / `client-<name>.key`: one client certificate per
  `--client`, for mutual TLS (its common name is the client's id).

Private keys are written owner-only and atomically. An existing authority
is reused, so adding a client does not invalidate the certificates already
handed out; delete the folder to start over. In production, certificates
come from the organisation's CA or a service mesh instead.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from resources.atomic import atomic_write_bytes

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
VALID_DAYS = 365


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, as PEM files."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class LocalAuthority:
    """The CA in `folder`; creates it on first use."""

    folder: Path
    name: str = "Secure AI Data Pipeline local CA"

    @property
    def certificate(self) -> Path:
        return self.folder / "ca.pem"

    def server(self, hosts: Sequence[str] = DEFAULT_HOSTS, name: str = "server") -> Identity:
        """A server certificate valid for `hosts` (DNS names or IP addresses)."""
        names = [_subject_alternative_name(host) for host in hosts]
        return self._issue(name, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names)

    def client(self, client_id: str) -> Identity:
        """A client certificate whose common name is `client_id`."""
        return self._issue(f"client-{client_id}", client_id, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _authority(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key_file = self.folder / "ca.key"
        if key_file.exists() and self.certificate.exists():
            key = load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_file} is not a CA key: delete {self.folder} to start over")
            return x509.load_pem_x509_certificate(self.certificate.read_bytes()), key
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        certificate = (
            _builder(subject, subject, key.public_key(), days=VALID_DAYS * 5)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_identity(Identity(self.certificate, key_file), certificate, key)
        return certificate, key

    def _issue(
        self, file_stem: str, common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
    ) -> Identity:
        authority, authority_key = self._authority()
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            _builder(subject, authority.subject, key.public_key(), days=VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        identity = Identity(self.folder / f"{file_stem}.pem", self.folder / f"{file_stem}.key")
        _write_identity(identity, builder.sign(authority_key, hashes.SHA256()), key)
        return identity


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_identity(
    identity: Identity, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    atomic_write_bytes(identity.key, pem, mode=0o600)
    atomic_write_bytes(identity.certificate, certificate.public_bytes(Encoding.PEM), mode=0o644)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resources.certificates", description="Make a local CA.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--host", action="append", help="server host name or IP (repeatable)")
    parser.add_argument("--client", action="append", default=[], help="client id for mTLS (repeatable)")
    args = parser.parse_args(argv)
    authority = LocalAuthority(args.folder)
    server = authority.server(args.host or DEFAULT_HOSTS)
    print(f"CA          {authority.certificate}")
    print(f"server      {server.certificate} ({', '.join(args.host or DEFAULT_HOSTS)})")
    for client_id in args.client:
        print(f"client      {authority.client(client_id).certificate} ({client_id})")


if __name__ == "__main__":
    main()

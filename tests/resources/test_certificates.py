"""The local CA of `make certs`: certificates a TLS client accepts, and keys kept owner-only."""

import socket
import ssl
import threading

import pytest
from cryptography import x509

from resources.certificates import LocalAuthority


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext, host: str) -> str:
    """Complete a TLS handshake over a socket pair; returns the client's view of the server's CN."""
    server_end, client_end = socket.socketpair()
    failures: list[Exception] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_end, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as error:
            failures.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(client_end, server_hostname=host) as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            tls.send(b"x")
    finally:
        thread.join(timeout=10)
    return subject["commonName"]


def _server_context(identity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(identity.certificate, identity.key)
    return context


def test_a_client_trusting_the_ca_accepts_the_server_for_its_hosts(tmp_path):
    authority = LocalAuthority(tmp_path / "certs")
    server = authority.server(("localhost", "127.0.0.1"))
    client = ssl.create_default_context(cafile=authority.certificate)
    assert _handshake(_server_context(server), client, "127.0.0.1") == "localhost"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_context(server), client, "db.example.org")


def test_a_client_trusting_another_ca_refuses_the_server(tmp_path):
    server = LocalAuthority(tmp_path / "ours").server()
    theirs = LocalAuthority(tmp_path / "theirs")
    theirs.server()
    stranger = ssl.create_default_context(cafile=theirs.certificate)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_context(server), stranger, "127.0.0.1")


def test_adding_a_client_keeps_the_authority_and_keys_are_owner_only(tmp_path):
    authority = LocalAuthority(tmp_path / "certs")
    first = authority.server()
    ca_before = authority.certificate.read_bytes()
    alice = authority.client("alice")
    assert authority.certificate.read_bytes() == ca_before, "a new client must not replace the CA"
    ca = x509.load_pem_x509_certificate(ca_before)
    for identity in (first, alice):
        x509.load_pem_x509_certificate(identity.certificate.read_bytes()).verify_directly_issued_by(ca)
        assert identity.key.stat().st_mode & 0o077 == 0
    assert (tmp_path / "certs" / "ca.key").stat().st_mode & 0o077 == 0
    common_name = x509.load_pem_x509_certificate(alice.certificate.read_bytes()).subject.rfc4514_string()
    assert common_name == "CN=alice"

"""The KMS key provider keeps every key wrapped by the KMS key and says what to fix when KMS fails."""

import os
import socket

import boto3
import pytest
import tink
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from tink import secret_key_access
from tink.proto import aes_gcm_hkdf_streaming_pb2, tink_pb2

from resources.keys import LocalKeyProvider
from resources.kms_keys import KmsKeyError, KmsKeyProvider, key_provider_from_environment
from resources.store import _KEYSET_AD, ArtifactStore


@pytest.fixture
def kms_keys(kms_key_uri, home) -> KmsKeyProvider:
    return KmsKeyProvider(key_uri=kms_key_uri, folder=str(home / "keys"))


def files_under(folder) -> list:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_secrets_and_signing_keys_round_trip_through_kms(kms_keys, kms_key_uri, home):
    secret = kms_keys.secret("ledger-mac")
    signer = kms_keys.signing_key("ledger-witness")
    release = kms_keys.ec_signing_key("release")
    # A new provider has no cached key: it must unwrap what the first one stored.
    again = KmsKeyProvider(key_uri=kms_key_uri, folder=str(home / "keys"))
    assert again.secret("ledger-mac") == secret and len(secret) == 32
    assert again.secret("pseudonym") != secret
    signature = signer.sign(b"checkpoint")
    again.signing_key("ledger-witness").public_key().verify(signature, b"checkpoint")
    assert again.ec_signing_key("release").private_numbers() == release.private_numbers()
    kek = again.key_encryption_aead()
    assert kek.decrypt(kms_keys.key_encryption_aead().encrypt(b"x", b"ad"), b"ad") == b"x"


def test_no_key_is_written_in_plaintext(kms_keys, home):
    secret = kms_keys.secret("ledger-mac")
    signer = kms_keys.signing_key("ledger-witness")
    release = kms_keys.ec_signing_key("release")
    plaintexts = [
        secret,
        signer.private_bytes_raw(),
        signer.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        release.private_numbers().private_value.to_bytes(32, "big"),
        release.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        b"PRIVATE KEY",
    ]
    folder = home / "keys"
    stored = files_under(folder)
    assert sorted(p.name for p in stored) == ["ledger-mac.secret", "ledger-witness.pem", "release.ec.pem"]
    assert os.stat(folder).st_mode & 0o777 == 0o700
    for path in stored:
        assert path.stat().st_mode & 0o777 == 0o600
        assert not any(plain in path.read_bytes() for plain in plaintexts), path


def test_the_store_keeps_its_data_keyset_wrapped_by_kms(kms_keys, home):
    store = ArtifactStore(key_provider=kms_keys, root=str(home / "store"))
    artifact = store.stage("collection").write_bytes("collection/t", b"patient table")
    fresh = ArtifactStore(key_provider=kms_keys, root=str(home / "store"))
    read = fresh.read_verified(artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest)
    assert read == b"patient table"
    keyset_file = home / "store" / ".keyset" / "data-keyset.json"
    handle = tink.json_proto_keyset_format.parse_encrypted(
        keyset_file.read_text(), kms_keys.key_encryption_aead(), _KEYSET_AD
    )
    keyset = tink_pb2.Keyset.FromString(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))
    key_value = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey.FromString(
        keyset.key[0].key_data.value
    ).key_value
    on_disk = b"".join(path.read_bytes() for path in files_under(home))
    assert len(key_value) == 32 and key_value not in on_disk
    assert not (home / "keys" / "kek.json").exists()


def test_a_wrapped_key_copied_over_another_name_does_not_unwrap(kms_keys, home):
    kms_keys.secret("ledger-mac")
    kms_keys.secret("pseudonym")
    folder = home / "keys"
    (folder / "pseudonym.secret").write_bytes((folder / "ledger-mac.secret").read_bytes())
    with pytest.raises(tink.TinkError, match="does not unwrap under PIPELINE_KMS_KEY_URI"):
        kms_keys.secret("pseudonym")


def test_material_wrapped_by_another_kms_key_is_refused_naming_the_setting(kms_keys, home):
    kms_keys.secret("ledger-mac")
    arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    other = KmsKeyProvider(key_uri=f"aws-kms://{arn}", folder=str(home / "keys"))
    with pytest.raises((KmsKeyError, tink.TinkError), match="PIPELINE_KMS_KEY_URI"):
        other.secret("ledger-mac")


def test_a_malformed_key_uri_names_the_setting_and_its_form(aws_environment, home):
    keys = KmsKeyProvider(key_uri="arn:aws:kms:us-east-1:123456789012:key/x", folder=str(home / "keys"))
    with pytest.raises(KmsKeyError, match=r"PIPELINE_KMS_KEY_URI=.*aws-kms://arn:aws:kms:<region>"):
        keys.secret("ledger-mac")
    assert not (home / "keys" / "ledger-mac.secret").exists()


def test_a_key_that_does_not_exist_names_the_setting(aws_environment, home):
    missing = "aws-kms://arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    keys = KmsKeyProvider(key_uri=missing, folder=str(home / "keys"))
    with pytest.raises(KmsKeyError, match="does not exist") as raised:
        keys.secret("ledger-mac")
    assert "PIPELINE_KMS_KEY_URI" in str(raised.value) and "AWS_ENDPOINT_URL" in str(raised.value)
    assert aws_environment in str(raised.value)
    assert list((home / "keys").iterdir()) == []


def test_an_unreachable_endpoint_names_the_setting(kms_key_uri, home, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the refusal is immediate: no need to wait for retries
    keys = KmsKeyProvider(key_uri=kms_key_uri, folder=str(home / "keys"))
    with pytest.raises(KmsKeyError, match="Cannot reach the KMS endpoint") as raised:
        keys.secret("ledger-mac")
    assert closed in str(raised.value) and "AWS_ENDPOINT_URL" in str(raised.value)
    assert "PIPELINE_KMS_KEY_URI" in str(raised.value)


def test_the_service_specific_endpoint_variable_wins(kms_key_uri, home, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: would fail if used
    keys = KmsKeyProvider(key_uri=kms_key_uri, folder=str(home / "keys"))
    assert len(keys.secret("ledger-mac")) == 32


def test_configuration_selects_the_provider(monkeypatch, kms_key_uri, home):
    monkeypatch.setenv("PIPELINE_KMS_KEY_URI", kms_key_uri)
    chosen = key_provider_from_environment(str(home / "keys"))
    assert isinstance(chosen, KmsKeyProvider) and chosen.key_uri == kms_key_uri
    monkeypatch.delenv("PIPELINE_KMS_KEY_URI")
    local = key_provider_from_environment(str(home / "keys"))
    assert isinstance(local, LocalKeyProvider) and not isinstance(local, KmsKeyProvider)

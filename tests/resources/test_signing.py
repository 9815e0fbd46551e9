"""OpenSSF model signing over a model directory: every kind of tampering is refused."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path, PurePosixPath

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from resources.releases import ReleaseSigner
from resources.signing import (
    SignatureError,
    key_fingerprint,
    public_key_pem,
    sign_model,
    verify_model,
    verify_model_manifest,
)
from tests.serving import write_model


@pytest.fixture(scope="module")
def release_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def model(tmp_path: Path, release_key) -> Path:
    return write_model(tmp_path / "model-v1", release_key)


def refused(model_dir: Path, keys, match: str) -> str:
    with pytest.raises(SignatureError, match=match) as info:
        verify_model(model_dir, keys)
    return str(info.value)


def test_sign_then_verify(model, release_key, other_key):
    assert (model / "model.sig").is_file()
    bundle = json.loads((model / "model.sig").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "blake3",
        "allow_symlinks": False,
        "ignore_paths": ["model.sig"],
    }
    assert sorted(r["name"] for r in statement["predicate"]["resources"]) == [
        "config.json",
        "model.safetensors",
    ]
    fingerprint = key_fingerprint(release_key.public_key())
    assert fingerprint.startswith("ecdsa-p256:") and len(fingerprint) == len("ecdsa-p256:") + 16
    # any trusted key may verify; PEM bytes and key objects are both accepted
    assert verify_model(model, [public_key_pem(other_key), release_key.public_key()]) == fingerprint
    verified = verify_model_manifest(model, [public_key_pem(release_key)])
    assert verified.files["model.safetensors"].startswith("blake3:")
    # verifying twice with the same inputs works (fresh Config each time)
    assert verify_model(model, [public_key_pem(release_key)]) == fingerprint


def test_one_changed_byte_in_the_weights_is_refused(model, release_key):
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    message = refused(model, [public_key_pem(release_key)], "does not match its signature")
    assert "changed file(s) ['model.safetensors']" in message


def test_edited_config_version_is_refused(model, release_key):
    config = json.loads((model / "config.json").read_text())
    config["version"] = 99
    (model / "config.json").write_text(json.dumps(config))
    message = refused(model, [public_key_pem(release_key)], "does not match its signature")
    assert "['config.json']" in message


def test_added_or_removed_file_is_refused(model, release_key, tmp_path):
    (model / "extra.bin").write_bytes(b"not signed")
    assert "unsigned file(s) added ['extra.bin']" in refused(model, [public_key_pem(release_key)], "match")
    (model / "extra.bin").unlink()
    verify_model(model, [public_key_pem(release_key)])
    (model / ".gitignore").write_text("*\n")  # git paths are not exempt, unlike the library default
    refused(model, [public_key_pem(release_key)], r"unsigned file\(s\) added \['.gitignore'\]")
    (model / ".gitignore").unlink()
    (model / "config.json").unlink()
    refused(model, [public_key_pem(release_key)], r"signed file\(s\) missing \['config.json'\]")


def test_unknown_signer_is_refused(tmp_path, release_key, other_key):
    forged = write_model(tmp_path / "forged", other_key)
    message = refused(forged, [public_key_pem(release_key)], "signed by an unknown key")
    assert key_fingerprint(release_key) in message
    # a forged hint naming the trusted key does not help: the signature itself is checked
    bundle = json.loads((forged / "model.sig").read_text())
    trusted = write_model(tmp_path / "trusted", release_key)
    bundle["verificationMaterial"] = json.loads((trusted / "model.sig").read_text())["verificationMaterial"]
    (forged / "model.sig").write_text(json.dumps(bundle))
    refused(forged, [public_key_pem(release_key)], "does not verify with any trusted release key")


def test_missing_or_garbled_signature_is_refused(model, release_key):
    (model / "model.sig").write_text("{not json")
    refused(model, [public_key_pem(release_key)], "not a model_signing bundle")
    (model / "model.sig").unlink()
    refused(model, [public_key_pem(release_key)], "No signature")
    with pytest.raises(SignatureError, match="No trusted release keys"):
        verify_model(model, [])


def test_symlinks_are_refused(tmp_path, release_key):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"outside the model")
    model = write_model(tmp_path / "linked", release_key)
    (model / "extra.bin").symlink_to(outside)
    refused(model, [public_key_pem(release_key)], "is a symlink")
    with pytest.raises(SignatureError, match="Cannot sign"):
        sign_model(model, release_key)
    (model / "extra.bin").unlink()
    (tmp_path / "current").symlink_to(model, target_is_directory=True)
    refused(tmp_path / "current", [public_key_pem(release_key)], "symlinked directory")


def _sign_manifest(tmp_path: Path, key, model_dir: Path, statement_edit) -> None:
    """Sign a hand-made statement with a trusted key, as an insider with the key could."""
    from model_signing import manifest as ms_manifest
    from model_signing._hashing.hashing import Digest
    from model_signing._signing import sign_ec_key, signing

    edit = statement_edit()
    items = [
        ms_manifest.FileManifestItem(path=PurePosixPath(name), digest=Digest("blake3", bytes(32)))
        for name in edit["names"]
    ]
    serialization = ms_manifest._FileSerialization("blake3", False, edit.get("ignore", ["model.sig"]))
    payload = signing.Payload(ms_manifest.Manifest(model_dir.name, items, serialization))
    key_file = tmp_path / "insider.pem"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chmod(key_file, 0o600)
    sign_ec_key.Signer(key_file).sign(payload).write(model_dir / "model.sig")


def test_manifest_paths_leaving_the_model_dir_are_refused(tmp_path, release_key):
    model = write_model(tmp_path / "traversal", release_key)
    _sign_manifest(tmp_path, release_key, model, lambda: {"names": ["config.json", "../../etc/passwd"]})
    message = refused(model, [public_key_pem(release_key)], "leaves the model directory")
    assert "../../etc/passwd" in message
    _sign_manifest(tmp_path, release_key, model, lambda: {"names": ["/etc/passwd"]})
    refused(model, [public_key_pem(release_key)], "leaves the model directory")


def test_a_signature_cannot_exempt_files_from_hashing(tmp_path, release_key):
    model = write_model(tmp_path / "exempt", release_key)
    _sign_manifest(
        tmp_path,
        release_key,
        model,
        lambda: {"names": ["config.json"], "ignore": ["model.sig", "model.safetensors"]},
    )
    refused(model, [public_key_pem(release_key)], r"exempts \['model.safetensors'\] from hashing")


def test_release_signer_resource(home, keys, tmp_path):
    signer = ReleaseSigner(key_provider=keys)
    model = write_model(tmp_path / "released", None)
    assert signer.sign(model) == model / "model.sig"
    assert verify_model(model, [signer.public_key_pem()]) == signer.fingerprint()
    assert oct(os.stat(home / "keys" / "release.ec.pem").st_mode & 0o777) == "0o600"
    assert b"PRIVATE" not in signer.public_key_pem()
    # signing is atomic: no temp file is left behind, and re-signing replaces the signature
    signer.sign(model)
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors", "model.sig"]

"""The secure loader refuses every trojan-model and rollback attack with a clear reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import ec

import resources.loader as loader_module
from examples.attacks.trojan_payloads import malicious_pickle, plain_pickle
from resources.artifact_formats import scan_for_pickle
from resources.loader import ModelRefused, SecureModelLoader, check_safetensors_format
from resources.signing import key_fingerprint, public_key_pem, sign_model
from tests.serving import ARCHITECTURES, expected_outputs, write_model


@pytest.fixture(scope="module")
def release_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def loader(tmp_path, release_key) -> SecureModelLoader:
    return SecureModelLoader(
        [public_key_pem(release_key)], ARCHITECTURES, tmp_path / "state" / "versions.json"
    )


def refusal(loader: SecureModelLoader, model_dir: Path, stage: str, match: str) -> str:
    with pytest.raises(ModelRefused, match=match) as info:
        loader.load(model_dir)
    assert info.value.stage == stage
    return str(info.value)


def test_a_clean_model_loads_and_predicts(tmp_path, loader, release_key):
    model_dir = write_model(tmp_path / "v1", release_key, version=1)
    loaded = loader.load(model_dir)
    assert loaded.version == 1
    assert loaded.signer == key_fingerprint(release_key)
    assert loaded.digest.startswith("blake3:") and len(loaded.digest) == len("blake3:") + 64
    assert not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())
    inputs = [[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]
    with torch.inference_mode():
        outputs = loaded.module(torch.tensor(inputs)).tolist()
    torch.testing.assert_close(torch.tensor(outputs), torch.tensor(expected_outputs(inputs)))
    state = json.loads((tmp_path / "state" / "versions.json").read_text())
    assert state["lines"]["tiny-linear"]["highest_version"] == 1


def test_a_tampered_byte_is_refused(tmp_path, loader, release_key):
    model_dir = write_model(tmp_path / "v1", release_key)
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x80
    weights.write_bytes(bytes(data))
    message = refusal(loader, model_dir, "signature", "does not match its signature")
    assert "model.safetensors" in message and "re-promote" in message


def test_a_valid_model_signed_by_an_unknown_key_is_refused(tmp_path, loader):
    attacker = ec.generate_private_key(ec.SECP256R1())
    model_dir = write_model(tmp_path / "v9", attacker, version=9)
    refusal(loader, model_dir, "signature", "signed by an unknown key")


def test_a_missing_signature_is_refused(tmp_path, loader):
    model_dir = write_model(tmp_path / "unsigned", None)
    refusal(loader, model_dir, "signature", "No signature")


def test_a_pickle_renamed_safetensors_and_signed_by_the_trusted_key_is_refused(tmp_path, loader, release_key):
    marker = tmp_path / "pwned"
    model_dir = write_model(tmp_path / "trojan", None, version=5)
    (model_dir / "model.safetensors").write_bytes(malicious_pickle(marker))
    # an insider (or a stolen key) signed it: only the format check is left
    sign_model(model_dir, release_key)
    message = refusal(loader, model_dir, "format", "not a safetensors file: looks like a pickle")
    assert "posix.system" in message or "os.system" in message
    assert not marker.exists()  # never unpickled
    assert loader.highest_version("tiny-linear") is None  # nothing recorded for a refused model


def test_the_safetensors_header_check_alone_catches_pickles_and_junk():
    harmless_pickle = plain_pickle({"weights": [1, 2, 3]})
    assert scan_for_pickle(harmless_pickle, "x") == []  # no globals: picklescan alone would let it through
    with pytest.raises(ModelRefused, match="looks like a pickle"):
        check_safetensors_format(harmless_pickle)
    with pytest.raises(ModelRefused, match="zip archive"):
        check_safetensors_format(b"PK\x03\x04" + bytes(60))
    bogus = (40).to_bytes(8, "little") + b'{"w":{"dtype":"F32","shape":[9],"data_offsets":[0,999]}}'[:40]
    with pytest.raises(ModelRefused, match="not a safetensors file"):
        check_safetensors_format(bogus)
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}'
    with pytest.raises(ModelRefused, match="offsets outside the file"):
        check_safetensors_format(len(header).to_bytes(8, "little") + header + bytes(4))
    assert "w" in check_safetensors_format(len(header).to_bytes(8, "little") + header + bytes(8))


@pytest.mark.parametrize("name", ["extra.pt", "pytorch_model.bin"])
def test_an_extra_pickle_file_is_refused(tmp_path, loader, release_key, name):
    marker = tmp_path / "pwned"
    model_dir = write_model(tmp_path / "extra", None)
    (model_dir / name).write_bytes(malicious_pickle(marker))
    sign_model(model_dir, release_key)
    message = refusal(loader, model_dir, "files", f"unexpected '{name}'")
    assert "picklescan" in message and "system" in message
    assert not marker.exists()


def test_a_signed_extra_file_of_any_kind_is_refused(tmp_path, loader, release_key):
    model_dir = write_model(tmp_path / "extra", None)
    (model_dir / "notes.txt").write_text("harmless, but not part of a model")
    sign_model(model_dir, release_key)
    refusal(loader, model_dir, "files", "unexpected 'notes.txt'.*not a pickle")


def test_an_older_signed_version_after_a_newer_one_is_a_rollback(tmp_path, loader, release_key):
    old = write_model(tmp_path / "v1", release_key, version=1, seed=1)
    new = write_model(tmp_path / "v2", release_key, version=2, seed=2)
    assert loader.load(new).version == 2
    message = refusal(loader, old, "rollback", "version 1 of 'tiny-linear', older than version 2")
    assert "promote a new version" in message
    # the state survives a restart: a fresh loader on the same state file refuses too
    fresh = SecureModelLoader([public_key_pem(release_key)], ARCHITECTURES, loader._state.path)
    refusal(fresh, old, "rollback", "older than version 2")
    assert fresh.load(new).version == 2  # reloading the current version is fine
    assert fresh.load(write_model(tmp_path / "v3", release_key, version=3)).version == 3
    assert fresh.highest_version("tiny-linear") == 3
    # an in-memory loader (no state file) still refuses within its lifetime
    memory = SecureModelLoader([public_key_pem(release_key)], ARCHITECTURES, None)
    memory.load(new)
    refusal(memory, old, "rollback", "older")


def test_a_corrupt_version_state_fails_closed(tmp_path, loader, release_key):
    loader._state.path.parent.mkdir(parents=True)
    loader._state.path.write_text("{truncated")
    refusal(loader, write_model(tmp_path / "v1", release_key), "rollback", "state .* is unreadable")


def test_unknown_architecture_and_mismatched_weights_are_refused(tmp_path, loader, release_key):
    unknown = write_model(tmp_path / "arch", None)
    config = json.loads((unknown / "config.json").read_text())
    config["architecture"]["name"] = "remote-code"
    (unknown / "config.json").write_text(json.dumps(config))
    sign_model(unknown, release_key)
    refusal(loader, unknown, "architecture", "'remote-code' is not one this server builds")

    mismatched = write_model(tmp_path / "shape", None)
    config = json.loads((mismatched / "config.json").read_text())
    config["architecture"]["in_features"] = 4
    (mismatched / "config.json").write_text(json.dumps(config))
    sign_model(mismatched, release_key)
    refusal(loader, mismatched, "weights", "do not fit architecture")


def test_a_file_swapped_after_verification_is_caught(tmp_path, loader, release_key, monkeypatch):
    model_dir = write_model(tmp_path / "race", release_key)
    verify = loader_module.verify_model_manifest

    def verify_then_swap(*args, **kwargs):
        result = verify(*args, **kwargs)
        write_model(model_dir, None, seed=7)  # the attacker wins the race after verification
        return result

    monkeypatch.setattr(loader_module, "verify_model_manifest", verify_then_swap)
    refusal(loader, model_dir, "signature", "changed after its signature was verified")

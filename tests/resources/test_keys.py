"""The local key provider keeps keys owner-only and refuses exposed ones."""

import os

import pytest

from resources.keys import APPROVER_KEY_VARIABLES, approver_key_file, held_signing_key
from resources.runtime import REPO_ROOT


def test_keys_are_created_once_owner_only(home, keys):
    first = keys.secret("ledger-mac")
    assert keys.secret("ledger-mac") == first and len(first) == 32
    assert keys.secret("other") != first
    folder = home / "keys"
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in folder.iterdir())
    kek = keys.key_encryption_aead()
    assert kek.decrypt(kek.encrypt(b"x", b"ad"), b"ad") == b"x"


def test_a_key_readable_by_others_is_refused(home, keys):
    keys.secret("ledger-mac")
    os.chmod(home / "keys" / "ledger-mac.secret", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        keys.secret("ledger-mac")


def test_a_held_key_is_made_owner_only_and_refused_once_others_can_read_it(tmp_path):
    path = tmp_path / "reviewers" / "code-approval.key"
    key = held_signing_key(path)
    assert held_signing_key(path).public_key() == key.public_key()  # made once, then read
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o700
    os.chmod(path, 0o640)
    with pytest.raises(PermissionError, match=f"chmod 600 {path}"):
        held_signing_key(path)


def test_each_approval_power_has_its_own_key_file_outside_the_pipelines_home(monkeypatch, tmp_path):
    for variable in APPROVER_KEY_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    code, retraining = approver_key_file("code"), approver_key_file("retraining")
    assert code != retraining and code.parent == retraining.parent == REPO_ROOT / ".reviewers"
    monkeypatch.setenv("PIPELINE_RETRAINING_APPROVER_KEY", str(tmp_path / "dr.key"))
    assert approver_key_file("retraining") == tmp_path / "dr.key"

"""The local key provider keeps keys owner-only and refuses exposed ones."""

import os

import pytest


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

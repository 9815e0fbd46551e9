"""Key rotation: older artifacts and entries still decrypt and verify; newer ones use the new keys."""

import hashlib
import hmac
import io
import json

import pytest
import sqlalchemy as sa
import tink
from dagster import materialize

from assets.storage_audit import integrity_audit
from pipelines.environment import resources_for
from pipelines.rotate_keys import RotationRefused, main, rotate_keys
from resources.digests import canonical_json
from resources.integrity import IntegrityLedger, LedgerEntry, _entries, mac_key_name
from resources.io_managers import JsonIOManager
from resources.kms_keys import KmsKeyProvider
from resources.runtime import RuntimeHome
from resources.segmented_aead import DecryptingReader, DecryptionError
from resources.store import _KEYSET_AD, ArtifactStore, _data_keys
from resources.trust_store import TrustStore


def store_in(home, keys) -> ArtifactStore:
    return ArtifactStore(key_provider=keys, root=str(home / "store"))


def ledger_in(home, keys, trust) -> IntegrityLedger:
    (home / "ledger").mkdir(parents=True, exist_ok=True)
    return IntegrityLedger(
        key_provider=keys, url=f"sqlite:///{home / 'ledger' / 'ledger.sqlite'}", trust_store=str(trust)
    )


def write(store: ArtifactStore, ledger: IntegrityLedger, name: str) -> LedgerEntry:
    artifact = store.stage("collection").write_bytes(f"collection/{name}", f"table {name}".encode() * 100)
    return ledger.append(
        LedgerEntry(
            subject=f"ecommerce/{name}",
            kind="artifact",
            path=artifact.path,
            digest=artifact.digest,
            stored_digest=artifact.stored_digest,
            size=artifact.size,
        )
    )


def read(store: ArtifactStore, entry: LedgerEntry) -> bytes:
    return store.read_verified(entry.path, digest=entry.digest, stored_digest=entry.stored_digest)


def keyset_info(home) -> dict:
    return json.loads((home / "store" / ".keyset" / "data-keyset.json").read_text())["keysetInfo"]


def decrypts_with_only(home, keys, key_id: int, path: str) -> bool:
    """Whether the artifact at `path` decrypts with a keyset holding nothing but data key `key_id`."""
    wrapped = (home / "store" / ".keyset" / "data-keyset.json").read_text()
    handle = tink.json_proto_keyset_format.parse_encrypted(wrapped, keys.key_encryption_aead(), _KEYSET_AD)
    only = {key_id: _data_keys(handle)[1][key_id]}
    ciphertext = io.BytesIO((home / "store" / path).read_bytes())
    try:
        DecryptingReader(ciphertext, only, path.encode()).read()
    except DecryptionError:
        return False
    return True


@pytest.fixture
def trust(tmp_path):
    return tmp_path / "trust"


def test_data_key_rotation_keeps_old_artifacts_readable_and_writes_new_ones_under_the_new_key(
    home, keys, trust
):
    store, ledger = store_in(home, keys), ledger_in(home, keys, trust)
    before = write(store, ledger, "before")
    old_primary = keyset_info(home)["primaryKeyId"]

    new_primary = store.rotate_data_key()

    info = keyset_info(home)
    assert info["primaryKeyId"] == new_primary != old_primary
    assert {k["keyId"] for k in info["keyInfo"]} == {old_primary, new_primary}
    after = write(store, ledger, "after")
    reopened = store_in(home, keys)  # a later run reads the rotated keyset from disk
    assert read(reopened, before) == b"table before" * 100
    assert read(reopened, after) == b"table after" * 100
    assert decrypts_with_only(home, keys, new_primary, after.path)
    assert not decrypts_with_only(home, keys, old_primary, after.path)
    assert decrypts_with_only(home, keys, old_primary, before.path)
    assert not decrypts_with_only(home, keys, new_primary, before.path)


def test_every_key_of_several_rotations_is_kept(home, keys, trust):
    store, ledger = store_in(home, keys), ledger_in(home, keys, trust)
    written = [write(store, ledger, "v0")]
    for generation in range(1, 3):
        store.rotate_data_key()
        written.append(write(store, ledger, f"v{generation}"))
    assert len(keyset_info(home)["keyInfo"]) == 3
    reopened = store_in(home, keys)
    assert [read(reopened, entry) for entry in written] == [f"table v{g}".encode() * 100 for g in range(3)]


def test_the_ledger_verifies_across_a_mac_key_rotation(home, keys, trust):
    ledger = ledger_in(home, keys, trust)
    for i in range(3):
        ledger.append(LedgerEntry(subject=f"ecommerce/t{i}", kind="artifact", digest=f"blake3:{i}"))
    rotation = ledger.rotate_mac_key()
    ledger.append(LedgerEntry(subject="ecommerce/t3", kind="artifact", digest="blake3:3"))

    report = ledger.verify_chain()
    assert report.ok and report.entries == 5, report.problems
    entries = list(ledger.entries())
    assert [e.mac_key_version for e in entries] == [1, 1, 1, 2, 2]
    assert rotation.seq == 4 and rotation.kind == "key-rotation" and rotation.prev_mac == entries[2].mac
    old_key, new_key = keys.secret("ledger-mac"), keys.secret(mac_key_name(2))
    assert mac_key_name(2) == "ledger-mac.v2" and old_key != new_key
    # Entries sealed before the rotation keep their original MAC, over the original fields.
    first = entries[0]
    assert "mac_key_version" not in first.body()
    assert first.mac == hmac.new(old_key, canonical_json(first.body()), hashlib.sha256).hexdigest()
    last = entries[-1]
    assert last.body()["mac_key_version"] == 2
    assert last.mac == hmac.new(new_key, canonical_json(last.body()), hashlib.sha256).hexdigest()


@pytest.fixture
def rotated(home, keys, trust) -> IntegrityLedger:
    ledger = ledger_in(home, keys, trust)
    for i in range(3):
        ledger.append(LedgerEntry(subject=f"ecommerce/t{i}", kind="artifact", digest=f"blake3:{i}"))
    ledger.rotate_mac_key()
    ledger.append(LedgerEntry(subject="ecommerce/t4", kind="artifact", digest="blake3:4"))
    return ledger


def _sql(ledger: IntegrityLedger, statement: str) -> None:
    with ledger._db().begin() as conn:
        conn.execute(sa.text(statement))


def test_tampering_with_an_entry_from_before_the_rotation_is_still_detected(rotated):
    _sql(rotated, "UPDATE ledger_entries SET digest = 'blake3:forged' WHERE seq = 2")
    report = rotated.verify_chain()
    assert not report.ok
    assert any("#2" in p and "altered" in p for p in report.problems)


def test_history_rewritten_with_the_retired_key_is_caught_at_the_rotation(rotated, keys):
    """Whoever stole the old MAC key can re-seal old entries, but not the rotation entry that pins them."""
    old_key = keys.secret("ledger-mac")
    first, *rewritten = [e for e in rotated.entries() if e.mac_key_version == 1]
    prev_mac = first.mac
    for entry in rewritten:
        body = {**entry.body(), "digest": "blake3:forged", "prev_mac": prev_mac}
        mac = hmac.new(old_key, canonical_json(body), hashlib.sha256).hexdigest()
        _sql(
            rotated,
            f"UPDATE ledger_entries SET digest = 'blake3:forged', prev_mac = '{prev_mac}', mac = '{mac}' "
            f"WHERE seq = {entry.seq}",
        )
        prev_mac = mac
    report = rotated.verify_chain()
    assert not any("altered" in p or "retired" in p for p in report.problems)  # each forgery is well sealed
    assert "entry #4 does not follow the entry before it" in report.problems


def test_an_entry_appended_with_the_retired_key_is_detected(rotated, keys):
    head = rotated.head()
    forged = LedgerEntry(
        subject="ecommerce/t9", kind="artifact", digest="blake3:forged", seq=head.seq + 1, prev_mac=head.mac
    )
    mac = hmac.new(keys.secret("ledger-mac"), canonical_json(forged.body()), hashlib.sha256).hexdigest()
    row = {**forged.body(), "mac": mac}
    for name in ("inputs", "sources", "details"):
        row[name] = json.dumps(row[name])
    with rotated._db().begin() as conn:
        conn.execute(_entries.insert().values(**row))
    report = rotated.verify_chain()
    assert any(f"#{head.seq + 1}" in p and "retired key" in p for p in report.problems)


def test_a_ledger_made_before_rotation_existed_is_upgraded_in_place(home, keys, trust):
    ledger = ledger_in(home, keys, trust)
    for i in range(2):
        ledger.append(LedgerEntry(subject=f"ecommerce/t{i}", kind="artifact", digest=f"blake3:{i}"))
    _sql(ledger, "ALTER TABLE ledger_entries DROP COLUMN mac_key_version")  # the table an older version made
    ledger._engine.dispose()

    upgraded = ledger_in(home, keys, trust)
    assert upgraded.verify_chain().ok
    upgraded.rotate_mac_key()
    upgraded.append(LedgerEntry(subject="ecommerce/t2", kind="artifact", digest="blake3:2"))
    report = upgraded.verify_chain()
    assert report.ok and report.entries == 4, report.problems
    assert [e.mac_key_version for e in upgraded.entries()] == [1, 1, 2, 2]


def test_rotate_keys_refuses_over_a_broken_chain_and_rotates_nothing(home, keys, trust):
    store, ledger = store_in(home, keys), ledger_in(home, keys, trust)
    write(store, ledger, "a")
    _sql(ledger, "UPDATE ledger_entries SET size = 1 WHERE seq = 1")
    keyset_before = keyset_info(home)
    with pytest.raises(RotationRefused, match="altered"):
        rotate_keys(store, ledger)
    assert keyset_info(home) == keyset_before
    assert [e.kind for e in ledger.entries()] == ["artifact"]


def test_the_integrity_audit_passes_across_a_rotation_of_both_keys(home, keys, trust):
    store, ledger = store_in(home, keys), ledger_in(home, keys, trust)
    before = write(store, ledger, "before")
    rotation = rotate_keys(store, ledger)
    assert rotation.mac_key == "ledger-mac.v2" and rotation.entries == 2
    after = write(store, ledger, "after")
    audit, checks = integrity_audit("ecommerce")
    result = materialize(
        [audit, *checks],
        resources={
            "ledger": ledger,
            "store": store,
            "trust_store": TrustStore(trust),
            "json_io_manager": JsonIOManager(store=store, ledger=ledger),
        },
    )
    findings = result.output_for_node("ecommerce__integrity_audit")
    assert findings["artifacts_checked"] == 2 and findings["chain_ok"], findings
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "store_matches_ledger": True,
        "ledger_chain_intact": True,
    }
    reopened = store_in(home, keys)
    assert read(reopened, before) == b"table before" * 100 and read(reopened, after) == b"table after" * 100


def test_rotation_round_trip_with_kms_wrapped_keys(kms_key_uri, home, trust):
    keys = KmsKeyProvider(key_uri=kms_key_uri, folder=str(home / "keys"))
    store, ledger = store_in(home, keys), ledger_in(home, keys, trust)
    before = write(store, ledger, "before")
    rotate_keys(store, ledger)
    after = write(store, ledger, "after")

    reopened = store_in(home, KmsKeyProvider(key_uri=kms_key_uri, folder=str(home / "keys")))
    assert read(reopened, before) == b"table before" * 100 and read(reopened, after) == b"table after" * 100
    assert ledger.verify_chain().ok
    new_mac_key = keys.secret("ledger-mac.v2")
    assert new_mac_key not in (home / "keys" / "ledger-mac.v2.secret").read_bytes()


def test_the_rotate_keys_command_rotates_the_configured_store_and_ledger(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIPELINE_TRUST_STORE", str(tmp_path / "trust"))
    for name in ("PIPELINE_STORE_URL", "PIPELINE_LEDGER_URL", "PIPELINE_KMS_KEY_URI"):
        monkeypatch.delenv(name, raising=False)

    def configured() -> dict:
        return resources_for("ecommerce", RuntimeHome.from_environment(), TrustStore.from_environment())

    first = configured()
    before = write(first["store"], first["ledger"], "before")
    assert main() == 0
    assert "ledger-mac.v2 from entry #2" in capsys.readouterr().out
    later = configured()
    assert read(later["store"], before) == b"table before" * 100
    assert later["ledger"].verify_chain().ok
    assert [e.kind for e in later["ledger"].entries()] == ["artifact", "key-rotation"]
    assert len(keyset_info(tmp_path / "home")["keyInfo"]) == 2

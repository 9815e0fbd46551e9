"""The provenance ledger detects every way of rewriting its history."""

import hashlib
import json
import socket

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from resources.digests import canonical_json, digest_bytes, digest_file
from resources.integrity import IntegrityLedger, LedgerEntry, LedgerUnavailableError
from resources.trust_store import Checkpoint


def ledger_in(home, keys, trust) -> IntegrityLedger:
    home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{home / 'ledger.sqlite'}"
    return IntegrityLedger(key_provider=keys, url=url, trust_store=str(trust))


@pytest.fixture
def ledger(home, keys, tmp_path) -> IntegrityLedger:
    ledger = ledger_in(home, keys, tmp_path / "trust")
    for i in range(5):
        ledger.append(
            LedgerEntry(
                subject=f"ecommerce/t{i}",
                kind="artifact",
                digest=digest_bytes(str(i).encode()),
                path=f"collection/t{i}",
            )
        )
    return ledger


def _sql(ledger: IntegrityLedger, statement: str) -> None:
    with ledger._db().begin() as conn:
        conn.execute(sa.text(statement))


def test_digests_are_self_describing_and_agree_between_bytes_and_files(tmp_path):
    data = b"table bytes" * 1000
    (tmp_path / "f").write_bytes(data)
    for algorithm in ("blake3", "sha256"):
        assert digest_bytes(data, algorithm) == digest_file(tmp_path / "f", algorithm)
    assert digest_bytes(data, "sha256") == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest_bytes(data) != digest_bytes(data + b"!")


def test_intact_chain_verifies(ledger):
    report = ledger.verify_chain()
    assert report.ok and report.entries == 5 and report.head_seq == 5


def test_rewritten_entry_is_detected(ledger):
    _sql(ledger, "UPDATE ledger_entries SET digest = 'blake3:00' WHERE seq = 3")
    report = ledger.verify_chain()
    assert not report.ok
    assert any("#3" in p and "altered" in p for p in report.problems)


def test_rewrite_that_recomputes_the_chain_without_the_key_is_detected(ledger):
    """An attacker with database access but no MAC key cannot forge a consistent chain."""
    entries = list(ledger.entries())
    prev = entries[1].mac
    for entry in entries[2:]:
        body = {**entry.body(), "prev_mac": prev, "digest": "blake3:forged"}
        mac = hashlib.sha256(canonical_json(body)).hexdigest()
        _sql(
            ledger,
            f"UPDATE ledger_entries SET digest='blake3:forged', prev_mac='x{entry.seq}' "
            f"WHERE seq={entry.seq}",
        )
        _sql(
            ledger,
            f"UPDATE ledger_entries SET prev_mac='{prev}', mac='{mac}' WHERE seq={entry.seq}",
        )
        prev = mac
    assert not ledger.verify_chain().ok


def test_reordered_entries_are_detected(ledger):
    _sql(ledger, "UPDATE ledger_entries SET seq = 100 WHERE seq = 2")
    _sql(ledger, "UPDATE ledger_entries SET seq = 2 WHERE seq = 4")
    _sql(ledger, "UPDATE ledger_entries SET seq = 4 WHERE seq = 100")
    report = ledger.verify_chain()
    assert not report.ok
    assert any("does not follow" in p for p in report.problems)


def test_deleted_entry_is_detected(ledger):
    _sql(ledger, "DELETE FROM ledger_entries WHERE seq = 2")
    report = ledger.verify_chain()
    assert any("#2 is missing" in p for p in report.problems)


@pytest.mark.parametrize("kept", [0, 1, 4])
def test_any_deleted_tail_is_detected_by_the_witness(ledger, kept):
    """A clean prefix of a chain is still a chain, but not the history the witness saw."""
    _sql(ledger, f"DELETE FROM ledger_entries WHERE seq > {kept}")
    report = ledger.verify_chain()
    assert not report.ok
    assert any(f"the witness saw 5 entries but the ledger holds {kept}" in p for p in report.problems)


def test_an_older_ledger_restored_whole_is_detected(ledger, home, tmp_path):
    """The attacker keeps a copy of the ledger (and the Dagster home) and puts it back later."""
    backup = (home / "ledger.sqlite").read_bytes()
    ledger.append(LedgerEntry(subject="ecommerce/t9", kind="artifact", digest="blake3:later"))
    ledger._engine.dispose()
    (home / "ledger.sqlite").write_bytes(backup)
    report = ledger.verify_chain()
    assert not report.ok and any("older ledger was restored" in p for p in report.problems)


def test_a_replaced_history_of_the_same_length_is_detected(home, keys, tmp_path):
    """A ledger rebuilt with the MAC key (say, from a stolen keyset) still differs from what was witnessed."""
    trust = tmp_path / "trust"
    ledger = ledger_in(home, keys, trust)
    ledger.append(LedgerEntry(subject="ecommerce/a", kind="artifact", digest="blake3:original"))
    ledger._engine.dispose()
    (home / "ledger.sqlite").unlink()
    forged = ledger_in(home, keys, tmp_path / "elsewhere")  # its checkpoints go somewhere else
    forged.append(LedgerEntry(subject="ecommerce/a", kind="artifact", digest="blake3:forged"))
    report = ledger_in(home, keys, trust).verify_chain()
    assert any("not the entries the witness saw" in p for p in report.problems)


def test_a_checkpoint_not_signed_by_the_ledger_is_refused(ledger, tmp_path):
    ledger._witness().witness_checkpoint(Checkpoint(99, "0" * 64), Ed25519PrivateKey.generate())
    report = ledger.verify_chain()
    assert any("witness is damaged" in p for p in report.problems)


def test_latest_follows_lineage_and_records_what_made_an_artifact(ledger):
    ledger.append(
        LedgerEntry(
            subject="ecommerce/t1",
            kind="artifact",
            digest="blake3:new",
            inputs={"ecommerce/t0": "blake3:aa"},
            code_version="blake3:cc",
        )
    )
    latest = ledger.latest("ecommerce/t1")
    assert latest.digest == "blake3:new" and latest.seq == 6
    assert latest.inputs == {"ecommerce/t0": "blake3:aa"}
    assert ledger.verify_chain().ok
    assert json.loads(json.dumps(latest.body()))["code_version"] == "blake3:cc"


def test_an_unreachable_ledger_database_names_the_setting(keys, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = IntegrityLedger(
        key_provider=keys,
        url=f"postgresql+psycopg://pipeline:s3cret@127.0.0.1:{port}/ledger",
        trust_store=str(tmp_path / "trust"),
    )
    with pytest.raises(LedgerUnavailableError) as refused:
        ledger.head()
    message = str(refused.value)
    assert "PIPELINE_LEDGER_URL" in message and f"127.0.0.1:{port}" in message
    assert "s3cret" not in message  # the password is masked

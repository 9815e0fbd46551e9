"""The operator's trust store: append-only witness logs, operator records, signed acknowledgements."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from resources.trust_store import ReleaseRecord, TrustStore, TrustStoreError


@pytest.fixture
def trust(tmp_path) -> TrustStore:
    return TrustStore(tmp_path / "trust")


def test_the_floor_is_the_newest_release_on_record_whatever_was_appended_later(trust):
    trust.record_release(ReleaseRecord("m", 1, "blake3:a", ""))
    trust.record_release(ReleaseRecord("m", 2, "blake3:b", "blake3:a"))
    trust.record_release(ReleaseRecord("m", 1, "blake3:a", ""))  # appending an old record lowers nothing
    trust.record_release(ReleaseRecord("other", 7, "blake3:c", ""))
    assert trust.release_floor("m").version == 2
    assert trust.release_floor("none") is None


def test_sequences_keep_each_sources_highest(trust):
    for source, sequence in (("a", 5), ("b", 3), ("a", 9), ("a", 2)):
        trust.record_sequence(source, sequence, f"{source}-{sequence}")
    assert trust.last_sequences() == {"a": 9, "b": 3}


def test_an_edited_witness_line_breaks_the_chain(trust):
    trust.record_sequence("a", 5, "a-5")
    trust.record_sequence("a", 9, "a-9")
    log = trust.root / "witness" / "sequences.jsonl"
    lines = log.read_bytes().splitlines()
    entry = json.loads(lines[1])
    entry["body"]["sequence"] = 1
    log.write_bytes(lines[0] + b"\n" + json.dumps(entry).encode() + b"\n")
    with pytest.raises(TrustStoreError, match="line 2"):
        trust.last_sequences()


def test_only_the_operators_signature_clears_an_alarm(trust):
    operator, intruder = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust.set_operator_key(operator.public_key())
    alarm = trust.raise_alarm("ecommerce/ledger", "entries deleted")
    trust.acknowledge(alarm, "intruder", intruder, "nothing to see")
    assert [a.alarm_id for a in trust.open_alarms()] == [alarm]
    trust.acknowledge(alarm, "ops", operator, "restored from backup, checked")
    assert trust.open_alarms() == []
    with pytest.raises(TrustStoreError, match="another operator key"):
        trust.set_operator_key(intruder.public_key())


def test_release_keys_are_an_operator_list(trust):
    assert trust.trusted_release_keys() == []
    trust.trust_release_key(b"-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n", operator="ops")
    trust.trust_release_key(b"-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n", operator="ops")
    assert len(trust.trusted_release_keys()) == 1

"""The operator's trust store: append-only witness logs, operator records, signed acknowledgements."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from resources.signed_records import public_key_b64, sign_record
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


def test_only_the_operator_lists_approvers_and_each_power_needs_its_own_key(trust):
    operator, reviewer, other = (Ed25519PrivateKey.generate() for _ in range(3))
    trust.set_operator_key(operator.public_key())
    with pytest.raises(TrustStoreError, match="Only the operator key"):
        trust.trust_approver_key("code", reviewer.public_key(), "pipeline", reviewer)
    trust.trust_approver_key("code", reviewer.public_key(), "ops", operator)
    trust.trust_approver_key("code", reviewer.public_key(), "ops", operator)  # listing twice adds nothing
    assert [k.public_bytes_raw() for k in trust.trusted_approver_keys("code")] == [
        reviewer.public_key().public_bytes_raw()
    ]
    with pytest.raises(TrustStoreError, match="already approves code"):
        trust.trust_approver_key("retraining", reviewer.public_key(), "ops", operator)
    with pytest.raises(TrustStoreError, match="operator's own key"):
        trust.trust_approver_key("retraining", operator.public_key(), "ops", operator)
    trust.trust_approver_key("retraining", other.public_key(), "ops", operator)
    assert [k.public_bytes_raw() for k in trust.trusted_approver_keys("retraining")] == [
        other.public_key().public_bytes_raw()
    ]


def test_an_approver_entry_appended_without_the_operators_signature_is_ignored(trust):
    """What the pipeline can do to the store (append) cannot list a key it holds."""
    operator, insider = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust.set_operator_key(operator.public_key())
    entry = {"power": "code", "public_key": public_key_b64(insider), "added_by": "ops", "at": "2026-01-01"}
    trust._approvers.append(sign_record(entry, insider))
    trust._approvers.append(entry | {"signature": ""})
    assert trust.trusted_approver_keys("code") == []

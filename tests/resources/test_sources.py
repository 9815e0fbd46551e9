"""Batch authentication and rate limiting against the source registry."""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.accounting import ReplayGuard
from examples.ecommerce.sources import SourceKeys, enrol_sources, kafka_message, signed_bytes, write_batch
from resources.sources import RateLimiter, SourceRegistry, landed_batches

TOPIC = "user-activity"
NOW = "2026-11-02T10:00:00.000Z"


@pytest.fixture
def registry(home) -> tuple[SourceRegistry, SourceKeys]:
    keys = SourceKeys.load_or_create(home / "simulator")
    enrol_sources(home / "registry.json", keys, max_records_per_hour=10)
    return SourceRegistry(
        name="ecommerce", path=str(home / "registry.json"), landing=str(home / "landing")
    ), keys


def _land(registry: SourceRegistry, source: str, signer, n: int = 3, topic: str = TOPIC, name="b1"):
    offsets: dict = {}
    messages = [kafka_message(topic, offsets, "u1", {"i": i}, NOW) for i in range(n)]
    return write_batch(
        registry.landing_dir(),
        source,
        topic,
        messages,
        signer,
        batch_id=f"{source}-{name}",
        created_at=datetime(2026, 11, 2, tzinfo=UTC),
    )


def _verdicts(registry: SourceRegistry) -> dict[str, str]:
    policies = registry.policies()
    return {
        b.batch_id: registry.verify(b, TOPIC, policies).reason
        for b in landed_batches(registry.landing_dir(), TOPIC)
    }


def test_a_registered_source_signing_with_its_key_is_accepted(registry):
    reg, keys = registry
    _land(reg, "web-clickstream", keys.signer("web-clickstream"))
    assert _verdicts(reg) == {"web-clickstream-b1": ""}


def test_forged_unsigned_unknown_and_misrouted_batches_are_refused(registry):
    reg, keys = registry
    _land(reg, "web-clickstream", Ed25519PrivateKey.generate(), name="forged")
    _land(reg, "mobile-app", None, name="unsigned")
    _land(reg, "web-clickstream", keys.signer("mobile-app"), name="wrong-key")
    manifest = _land(reg, "mobile-app", keys.signer("mobile-app"), name="renamed")
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "source": "partner-feed"}))
    _land(reg, "reviews-service", keys.signer("reviews-service"), name="misrouted")
    tampered = _land(reg, "web-clickstream", keys.signer("web-clickstream"), name="tampered")
    data_file = tampered.with_name("web-clickstream-tampered.jsonl")
    data_file.write_bytes(data_file.read_bytes() + b'{"injected": true}\n')

    reasons = _verdicts(reg)
    assert reasons["web-clickstream-forged"].startswith("bad signature")
    assert reasons["mobile-app-unsigned"].startswith("unsigned")
    assert reasons["web-clickstream-wrong-key"].startswith("bad signature")
    assert reasons["mobile-app-renamed"].startswith("unknown source")
    assert reasons["reviews-service-misrouted"].startswith("source 'reviews-service' is not registered")
    assert reasons["web-clickstream-tampered"].startswith("digest mismatch")


def test_data_without_a_manifest_is_refused(registry):
    reg, _ = registry
    folder = reg.landing_dir() / TOPIC
    folder.mkdir(parents=True)
    (folder / "dropped.jsonl").write_bytes(b"{}\n")
    assert _verdicts(reg) == {"dropped": "unsigned: batch has no manifest"}


def test_rate_limiter_admits_whole_batches_within_the_hourly_budget(registry):
    reg, _ = registry
    policy = reg.policies()["web-clickstream"]
    limiter = RateLimiter()
    hour = 3_600_000
    assert limiter.admit(policy, [hour] * 6) == ""
    assert "over its limit of 10" in limiter.admit(policy, [hour] * 5)
    assert limiter.admit(policy, [hour] * 4) == ""  # the refused batch used none of the budget
    assert limiter.admit(policy, [2 * hour] * 10) == ""  # a new hour, a new budget


def _land_files(registry: SourceRegistry, keys: SourceKeys, files: dict[str, bytes], name: str) -> Path:
    from examples.healthcare.batches import write_file_batch

    return write_file_batch(
        registry.landing_dir(),
        "web-clickstream",
        TOPIC,
        files,
        keys.signer("web-clickstream"),
        batch_id=f"files-{name}",
        created_at=datetime(2026, 11, 2, tzinfo=UTC),
    )


def test_file_batches_verify_every_file_and_the_exact_file_set(registry):
    reg, keys = registry
    _land_files(reg, keys, {"a.dcm": b"A" * 64, "b.dcm": b"B" * 64}, "clean")
    _land_files(reg, keys, {"a.dcm": b"A" * 64}, "changed")
    (reg.landing_dir() / TOPIC / "files-changed" / "a.dcm").write_bytes(b"X" * 64)
    _land_files(reg, keys, {"a.dcm": b"A" * 64}, "extra")
    (reg.landing_dir() / TOPIC / "files-extra" / "payload.exe").write_bytes(b"MZ")
    _land_files(reg, keys, {"a.dcm": b"A" * 64, "b.dcm": b"B"}, "missing")
    (reg.landing_dir() / TOPIC / "files-missing" / "b.dcm").unlink()

    reasons = _verdicts(reg)
    assert reasons["files-clean"] == ""
    assert reasons["files-changed"].startswith("digest mismatch")
    assert reasons["files-extra"].startswith("file set mismatch")
    assert reasons["files-missing"].startswith("file set mismatch")


def test_a_manifest_signed_without_a_sequence_number_is_refused(registry):
    """A source must sign its batch sequence, or replays could not be told apart after the ledger is lost."""
    reg, keys = registry
    manifest = _land(reg, "web-clickstream", keys.signer("web-clickstream"), name="old-style")
    data = json.loads(manifest.read_text())
    del data["sequence"], data["signature"]
    data["signature"] = base64.b64encode(keys.signer("web-clickstream").sign(signed_bytes(data))).decode()
    manifest.write_text(json.dumps(data))
    reason = "unsigned sequence: manifest carries no batch sequence number"
    assert _verdicts(reg) == {"web-clickstream-old-style": reason}


def test_a_batch_at_or_below_the_witnessed_sequence_is_a_replay_whatever_the_ledger_lost(registry):
    reg, keys = registry
    _land(reg, "web-clickstream", keys.signer("web-clickstream"), name="again")
    [batch] = landed_batches(reg.landing_dir(), TOPIC)
    verdict = reg.verify(batch, TOPIC, reg.policies())
    assert verdict.accepted and verdict.sequence > 0
    fresh = ReplayGuard(batch_ids=set(), last_sequences={"web-clickstream": verdict.sequence - 1})
    assert fresh.reason(verdict) == ""
    fresh.accepted(verdict)
    assert fresh.reason(verdict) == "replay: batch was already collected"  # twice in one run
    witnessed = ReplayGuard(batch_ids=set(), last_sequences={"web-clickstream": verdict.sequence})
    assert witnessed.reason(verdict).startswith(f"replay: sequence {verdict.sequence} is not above")

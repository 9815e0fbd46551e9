"""The Kafka intake against librdkafka's mock cluster: windows, offsets and what a message becomes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

pytest.importorskip("confluent_kafka")

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from examples.ecommerce.kafka import KafkaPublisher, MockKafka  # noqa: E402
from examples.ecommerce.sources import SourceKeys, enrol_sources, kafka_message  # noqa: E402
from resources.integrity import IntegrityLedger, LedgerEntry  # noqa: E402
from resources.kafka_intake import (  # noqa: E402
    MANIFEST_HEADER,
    WINDOW_KIND,
    KafkaIntake,
    KafkaWindowError,
    claimed_batch_id,
)
from resources.sources import SourceRegistry  # noqa: E402

TOPIC = "user-activity"
NOW = "2026-11-02T10:00:00.000Z"


@pytest.fixture
def cluster() -> Iterator[MockKafka]:
    with MockKafka() as mock:
        yield mock


@pytest.fixture
def registry(home) -> tuple[SourceRegistry, SourceKeys]:
    keys = SourceKeys.load_or_create(home / "simulator")
    enrol_sources(home / "registry.json", keys, max_records_per_hour=1_000)
    return SourceRegistry(
        name="ecommerce", path=str(home / "registry.json"), landing=str(home / "landing")
    ), keys


@pytest.fixture
def ledger(home, keys) -> IntegrityLedger:
    return IntegrityLedger(
        key_provider=keys, url=f"sqlite:///{home}/ledger.sqlite", trust_store=str(home / "trust")
    )


def _intake(cluster: MockKafka, group: str = "collection") -> KafkaIntake:
    return KafkaIntake(
        bootstrap_servers=cluster.bootstrap_servers,
        group_id=group,
        security_protocol="PLAINTEXT",
        window_timeout_s=20,
    )


def _publish(cluster: MockKafka, keys: SourceKeys, batches: list[tuple[str, str, int]]) -> None:
    """Publish signed batches (source, batch id, records) on TOPIC."""
    with KafkaPublisher({"bootstrap.servers": cluster.bootstrap_servers}) as publisher:
        for i, (source, batch_id, n) in enumerate(batches):
            offsets: dict = {}
            messages = [kafka_message(TOPIC, offsets, "u1", {"i": j}, NOW) for j in range(n)]
            created = datetime(2026, 11, 2, 10, i, tzinfo=UTC)
            publisher(source, TOPIC, messages, keys.signer(source), batch_id=batch_id, created_at=created)


def _committed(cluster: MockKafka, group: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(TOPIC, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        consumer.close()


def test_the_consumer_commits_only_by_hand_and_defaults_to_sasl_over_tls():
    secure = KafkaIntake(
        bootstrap_servers="broker:9093",
        sasl_username="collector",
        sasl_password="not-a-real-one",  # noqa: S106 -- production passes dagster.EnvVar
    )
    config = secure.consumer_config()
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.username"] == "collector"
    assert config["isolation.level"] == "read_committed"
    assert (
        "sasl.password"
        not in KafkaIntake(bootstrap_servers="b:9092", security_protocol="SSL").consumer_config()
    )
    assert KafkaIntake(bootstrap_servers="b", topics={TOPIC: "shop.activity.v1"}).kafka_topic(TOPIC) == (
        "shop.activity.v1"
    )


def test_each_message_is_spooled_as_the_landed_batch_the_registry_verifies(
    cluster, registry, ledger, tmp_path
):
    reg, keys = registry
    _publish(cluster, keys, [("web-clickstream", "web-1", 3), ("mobile-app", "mobile-1", 2)])
    with KafkaPublisher({"bootstrap.servers": cluster.bootstrap_servers}) as publisher:
        publisher.send(TOPIC, b'{"not": "signed"}\n', [], "intruder")

    window = _intake(cluster).open_window(TOPIC, tmp_path / "spool", ledger)
    window.close()

    policies = reg.policies()
    verdicts = {b.batch_id: reg.verify(b, TOPIC, policies) for b in window.batches()}
    unsigned = next(m for m in window.messages if m.batch.batch_id.startswith(f"{TOPIC}/"))
    assert unsigned.batch.batch_id == f"{TOPIC}/{unsigned.partition}/{unsigned.offset}"
    assert {k: v.reason for k, v in verdicts.items()} == {
        "web-1": "",
        "mobile-1": "",
        unsigned.batch.batch_id: "unsigned: batch has no manifest",
    }
    assert verdicts["web-1"].records == 3 and verdicts["mobile-1"].records == 2
    assert sum(r.end - r.start for r in window.ranges) == len(window.messages) == 3


def test_offsets_move_only_when_a_window_is_committed(cluster, registry, ledger, tmp_path):
    _, keys = registry
    _publish(cluster, keys, [("web-clickstream", "web-1", 2), ("web-clickstream", "web-2", 2)])
    intake = _intake(cluster)

    abandoned = intake.open_window(TOPIC, tmp_path / "a", ledger)
    abandoned.close()  # as a consumer killed before its window was stored: nothing committed
    again = intake.open_window(TOPIC, tmp_path / "b", ledger)
    assert (
        [b.batch_id for b in again.batches()]
        == [b.batch_id for b in abandoned.batches()]
        == ["web-1", "web-2"]
    )
    again.commit()
    again.close()

    partitions = [r.partition for r in again.ranges]
    assert _committed(cluster, "collection", partitions) == {r.partition: r.end for r in again.ranges}
    empty = intake.open_window(TOPIC, tmp_path / "c", ledger)
    empty.close()
    assert empty.messages == []
    _publish(cluster, keys, [("web-clickstream", "web-3", 1)])
    later = intake.open_window(TOPIC, tmp_path / "d", ledger)
    later.close()
    assert [b.batch_id for b in later.batches()] == ["web-3"]


def test_the_ledger_not_the_group_offset_says_where_the_next_window_starts(
    cluster, registry, ledger, tmp_path
):
    """Killed after the window was ledgered, before Kafka took the commit: the window is not read again."""
    _, keys = registry
    _publish(cluster, keys, [("web-clickstream", "web-1", 2)])
    intake = _intake(cluster)
    window = intake.open_window(TOPIC, tmp_path / "a", ledger)
    ledger.append(
        LedgerEntry(subject="test/kafka-window", kind=WINDOW_KIND, digest="", details=window.details())
    )
    window.close()  # no commit

    resumed = intake.open_window(TOPIC, tmp_path / "b", ledger)
    resumed.close()
    assert resumed.messages == [] and [r.start for r in resumed.ranges] == [r.end for r in window.ranges]
    other_group = _intake(cluster, group="audit").open_window(TOPIC, tmp_path / "c", ledger)
    other_group.close()
    assert [b.batch_id for b in other_group.batches()] == ["web-1"]  # another group's windows are its own


def test_a_topic_that_ends_before_what_was_counted_is_refused(cluster, registry, ledger, tmp_path):
    _, keys = registry
    _publish(cluster, keys, [("web-clickstream", "web-1", 1)])
    intake = _intake(cluster)
    window = intake.open_window(TOPIC, tmp_path / "a", ledger)
    window.close()
    recreated = {
        **window.details(),
        "ranges": [{"partition": r.partition, "end": 1_000} for r in window.ranges],
    }
    ledger.append(LedgerEntry(subject="test/kafka-window", kind=WINDOW_KIND, digest="", details=recreated))

    with pytest.raises(KafkaWindowError, match="recreated or truncated"):
        intake.open_window(TOPIC, tmp_path / "b", ledger)


def test_a_hostile_manifest_header_claims_nothing(cluster, registry, ledger, tmp_path):
    """Deep nesting, a non-object, an oversized header: no batch id taken, and the registry refuses."""
    reg, keys = registry
    nested = b"[" * 100_000
    assert claimed_batch_id(nested) == claimed_batch_id(b"[1]") == claimed_batch_id(None) == ""
    assert claimed_batch_id(b'{"batch_id": 7}') == "" and claimed_batch_id(b'{"batch_id": "b"}') == "b"
    signed = json.dumps({"batch_id": "x", "signature": "y"}).encode()
    with KafkaPublisher({"bootstrap.servers": cluster.bootstrap_servers}) as publisher:
        publisher.send(TOPIC, b"{}\n", [(MANIFEST_HEADER, nested)], "web-clickstream")
        publisher.send(
            TOPIC, b"{}\n", [(MANIFEST_HEADER, signed), (MANIFEST_HEADER, signed)], "web-clickstream"
        )
    forged = Ed25519PrivateKey.generate()
    _publish(cluster, SourceKeys({"web-clickstream": forged}), [("web-clickstream", "forged", 1)])

    window = _intake(cluster).open_window(TOPIC, tmp_path / "spool", ledger)
    window.close()

    policies = reg.policies()
    reasons = sorted(reg.verify(b, TOPIC, policies).reason.split(":")[0] for b in window.batches())
    assert reasons == ["bad signature", "unreadable manifest", "unsigned"]

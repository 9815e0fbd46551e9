"""Collection from Kafka (librdkafka's mock cluster): exact accounting, forged messages, killed consumers.

The real collection assets run with the source registry pointed at a mock
cluster; the shop's sources publish to it as they would to a broker.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("confluent_kafka")

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from dagster import DagsterInstance, ExecuteInProcessResult, materialize, mem_io_manager  # noqa: E402

from assets.checks.sources import source_checks  # noqa: E402
from assets.ecommerce.collection import ACTIVITY_KEY, activity_events, product_reviews  # noqa: E402
from domain.ecommerce.records import ACTIVITY, REVIEWS  # noqa: E402
from domain.ecommerce.topics import collect_topic  # noqa: E402
from examples.ecommerce.generate import default_paths  # noqa: E402
from examples.ecommerce.kafka import KafkaPublisher, MockKafka, batch_message, main  # noqa: E402
from examples.ecommerce.sources import SourceKeys, emit_window, enrol_sources, kafka_message  # noqa: E402
from examples.ecommerce.world.config import WorldConfig  # noqa: E402
from examples.ecommerce.world.simulation import build_world  # noqa: E402
from examples.runs import checks, metadata, trust_folder  # noqa: E402
from resources.integrity import IntegrityLedger, LedgerEntry  # noqa: E402
from resources.kafka_intake import WINDOW_KIND, KafkaIntake  # noqa: E402
from resources.keys import LocalKeyProvider  # noqa: E402
from resources.runtime import REPO_ROOT  # noqa: E402
from resources.scratch import ScratchSpace  # noqa: E402
from resources.sources import SourceRegistry  # noqa: E402
from resources.store import ArtifactStore  # noqa: E402
from resources.trust_store import TrustStore  # noqa: E402

EVENTS = 500  # 500 events and 40 reviews: seven messages of 100 records at most
BATCH_RECORDS = 100
ACTIVITY_SOURCES = ("web-clickstream", "mobile-app")
WINDOWS = "ecommerce/activity_events/kafka-window"


def kafka_resources(home: Path, bootstrap: str) -> dict:
    """What the collection assets ask for, over `home`, with the sources publishing to `bootstrap`."""
    keys = LocalKeyProvider(folder=str(home / "keys"))
    kafka = KafkaIntake(bootstrap_servers=bootstrap, security_protocol="PLAINTEXT", window_timeout_s=30)
    trust = trust_folder(home)
    return {
        "sources": SourceRegistry(
            name="ecommerce",
            path=str(default_paths(home)["registry"]),
            landing=str(home / "landing"),
            kafka=kafka,
        ),
        "ledger": IntegrityLedger(
            key_provider=keys, url=f"sqlite:///{home}/ledger.sqlite", trust_store=str(trust)
        ),
        "trust_store": TrustStore(trust),
        "store": ArtifactStore(key_provider=keys, root=str(home / "store")),
        "scratch": ScratchSpace(root=str(home / "scratch")),
        "io_manager": mem_io_manager,
    }


@dataclass
class KafkaShop:
    """A shop whose sources are enrolled and publish to a mock cluster, and a pipeline consuming it."""

    home: Path
    cluster: MockKafka
    max_records_per_hour: int = 1_000
    instance: DagsterInstance = field(default_factory=DagsterInstance.ephemeral)

    def __post_init__(self) -> None:
        self.keys = SourceKeys.load_or_create(default_paths(self.home)["keys"])
        enrol_sources(
            default_paths(self.home)["registry"], self.keys, max_records_per_hour=self.max_records_per_hour
        )
        self.resources = kafka_resources(self.home, self.cluster.bootstrap_servers)

    @property
    def ledger(self) -> IntegrityLedger:
        return self.resources["ledger"]

    def publisher(self) -> KafkaPublisher:
        return KafkaPublisher({"bootstrap.servers": self.cluster.bootstrap_servers})

    def publish_window(self) -> dict[str, dict[str, int]]:
        with self.publisher() as publisher:
            return emit_window(self.world(), publisher, self.keys, window="w", batch_records=BATCH_RECORDS)

    def world(self):
        return build_world(WorldConfig(seed=7, events=EVENTS))

    def collect(self, *assets) -> ExecuteInProcessResult:
        selected = assets or (activity_events, product_reviews)
        return materialize(selected, resources=self.resources, instance=self.instance, raise_on_error=False)

    def windows(self) -> list[LedgerEntry]:
        return [e for e in self.ledger.entries(kind=WINDOW_KIND) if e.subject == WINDOWS]

    def offsets(self, topic: str) -> tuple[dict[int, int], dict[int, int]]:
        """The collection group's committed offset and the high watermark of each partition of `topic`."""
        group = self.resources["sources"].kafka.group_id
        consumer = Consumer({"bootstrap.servers": self.cluster.bootstrap_servers, "group.id": group})
        try:
            partitions = [
                TopicPartition(topic, p)
                for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ]
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            high = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        finally:
            consumer.close()
        return committed, high


@pytest.fixture
def shop(home) -> Iterator[KafkaShop]:
    with MockKafka() as cluster:
        yield KafkaShop(home, cluster)


def _stored_window(shop: KafkaShop, asset: str) -> pd.DataFrame:
    entry = shop.ledger.latest(f"ecommerce/{asset}/{WINDOW_KIND}", kind=WINDOW_KIND)
    data = shop.resources["store"].read_verified(
        entry.path, digest=entry.digest, stored_digest=entry.stored_digest
    )
    return pq.read_table(io.BytesIO(data)).to_pandas()


def test_a_window_from_kafka_is_accounted_exactly_as_the_same_window_landed(shop, monkeypatch, tmp_path):
    """The generator's CLI publishes the inbox window; its counts are the landing zone's, record by record."""
    monkeypatch.setenv("PIPELINE_HOME", str(shop.home))
    published = main(
        ["--bootstrap", shop.cluster.bootstrap_servers, "--events", str(EVENTS), "--batch-records", "100"]
    )
    landing = tmp_path / "landing"
    emit_window(shop.world(), landing, shop.keys, window="w", batch_records=BATCH_RECORDS)

    result = shop.collect()

    assert result.success
    for asset, schema, sources, key in (
        ("activity_events", ACTIVITY, ACTIVITY_SOURCES, "event_id"),
        ("product_reviews", REVIEWS, ("reviews-service",), "review_id"),
    ):
        recorded = metadata(result, asset)
        landed = collect_topic(shop.resources["sources"], landing, schema, tmp_path / f"{asset}.parquet")
        assert recorded["received"] == landed.received == sum(published[s]["records"] for s in sources) > 0
        assert recorded["accepted"] + recorded["quarantined"] == recorded["received"]
        counts = (recorded["accepted"], recorded["quarantined"], recorded["quarantine_reasons"])
        assert counts == (landed.accepted, landed.quarantined, landed.reasons())
        assert recorded["kafka_window"]["messages"] == sum(published[s]["batches"] for s in sources)
        stored = _stored_window(shop, asset)[key]
        assert sorted(stored) == sorted(pd.read_parquet(tmp_path / f"{asset}.parquet")[key])
        committed, high = shop.offsets(schema.topic)
        assert {r["partition"]: r["end"] for r in recorded["kafka_window"]["ranges"]} == committed == high

    again = shop.collect()
    assert (
        metadata(again, "activity_events")["received"] == metadata(again, "product_reviews")["received"] == 0
    )


def _batch(source: str, payloads: list[dict], key, batch_id: str, *, topic: str = ACTIVITY.topic):
    """The value and headers of one batch of activity `payloads`, signed by `key` for `topic`."""
    offsets: dict = {}
    messages = [kafka_message(ACTIVITY.topic, offsets, p["user_id"], p, p["event_time"]) for p in payloads]
    return batch_message(source, topic, messages, key, batch_id=batch_id, created_at=datetime.now(UTC))


def test_forged_and_flooding_messages_are_quarantined_with_reasons_and_counted(home):
    """Each refused message is one quarantined batch with its reason and its place in the topic."""
    with MockKafka() as cluster:
        shop = KafkaShop(home, cluster, max_records_per_hour=50)
        clean = shop.publish_window()
        events = list(shop.world().activity_events())
        web, intruder = shop.keys.signer("web-clickstream"), Ed25519PrivateKey.generate()
        one_hour = [{**p, "event_time": events[0]["event_time"]} for p in events[:60]]
        value, headers = _batch("web-clickstream", events[:2], web, "f6")
        # A record whose payload nests 5,000 deep: one malformed record in an accepted batch.
        deep = {
            **kafka_message(ACTIVITY.topic, {}, "u", events[0], events[0]["event_time"]),
            "value": "[" * 5_000,
        }
        replayed = _batch("web-clickstream", events[2:4], web, "f7")
        messages = [
            _batch("web-clickstream", events[:3], intruder, "f1"),
            _batch("partner-feed", events[:2], intruder, "f2"),
            _batch("reviews-service", events[:2], shop.keys.signer("reviews-service"), "f3"),
            _batch("web-clickstream", events[:2], web, "f4", topic=REVIEWS.topic),  # for the other topic
            _batch("web-clickstream", one_hour, web, "f5"),  # 60 in one hour: over the limit of 50
            (value + value.splitlines(keepends=True)[0], headers),  # a record added after signing
            (value, []),
            replayed,
            replayed,
            batch_message(
                "web-clickstream",
                ACTIVITY.topic,
                [deep, kafka_message(ACTIVITY.topic, {}, "u", events[1], events[1]["event_time"])],
                web,
                batch_id="f8",
                created_at=datetime.now(UTC),
            ),
        ]
        with shop.publisher() as publisher:
            for message in messages:
                publisher.send(ACTIVITY.topic, *message, "web-clickstream")

        result = shop.collect(activity_events, *source_checks(ACTIVITY_KEY))

    recorded = metadata(result, "activity_events")
    reasons = {b["batch_id"]: b["reason"] for b in recorded["intake_report"]["refused_batches"]}
    [unsigned] = [k for k in reasons if k.startswith(f"{ACTIVITY.topic}/")]
    assert {k: v.split(":")[0] for k, v in reasons.items()} == {
        "f1": "bad signature",
        "f2": "unknown source 'partner-feed'",
        "f3": "source 'reviews-service' is not registered for topic 'user-activity'",
        "f4": "source 'web-clickstream' is not registered for topic 'user-activity'",
        "f5": "rate limit",
        "f6": "digest mismatch",
        unsigned: "unsigned",
        "f7": "replay",
    }
    refused_records = 3 + 2 + 2 + 2 + 60 + 3 + 2 + 2
    clean_records = sum(clean[s]["records"] for s in ACTIVITY_SOURCES)
    assert recorded["received"] == clean_records + refused_records + 2 + 2  # + the first f7, + f8
    assert recorded["quarantine_reasons"] == {"batch refused": refused_records, "malformed": 1}
    assert recorded["accepted"] == clean_records + 2 + 1
    assert recorded["received"] == recorded["accepted"] + recorded["quarantined"]
    assert checks(result)["activity_events:batches_authenticated"] is False
    assert checks(result)["activity_events:sources_within_rate_limits"] is False
    [window] = shop.windows()
    where = {m["batch_id"]: (m["partition"], m["offset"]) for m in window.details["refused_messages"]}
    assert set(where) == set(reasons) and len(set(where.values())) == len(reasons)
    assert unsigned == f"{ACTIVITY.topic}/{where[unsigned][0]}/{where[unsigned][1]}"


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dagster import DagsterInstance, materialize
    import assets.batches, resources.kafka_intake
    from assets.ecommerce.collection import activity_events
    from tests.assets.ecommerce.test_kafka_collection import kafka_resources

    home, bootstrap, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    def killed_here(*args, **kwargs):
        (home / "killable").write_text(point)
        time.sleep(300)

    if point == "collected":  # the window's verdicts are on the ledger; nothing is stored yet
        assets.batches.store_quarantine = killed_here
    else:  # the window is stored and ledgered; Kafka has not taken the commit
        resources.kafka_intake.KafkaWindow.commit = killed_here
    given = kafka_resources(home, bootstrap)
    materialize([activity_events], resources=given, instance=DagsterInstance.ephemeral())
    """
)


def _kill_mid_window(shop: KafkaShop, point: str) -> None:
    """Run the collection in a process of its own and SIGKILL it at `point` of the window."""
    log = shop.home / "killed.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", _KILLABLE, str(shop.home), shop.cluster.bootstrap_servers, point],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1"},
        )
        deadline = time.monotonic() + 120
        while not (shop.home / "killable").exists():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the collection never reached the kill point"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["collected", "ledgered"])
def test_a_consumer_killed_mid_window_resumes_without_loss_or_duplicates(shop, point):
    """SIGKILLed once every batch is judged (`collected`) or once the window is ledgered (`ledgered`).

    Either way the restarted collection leaves every message counted exactly
    once over the windows on the ledger, and the group's offsets at the end.
    """
    clean = shop.publish_window()
    events = list(shop.world().activity_events())[:5]
    with shop.publisher() as publisher:
        forged = _batch("web-clickstream", events, Ed25519PrivateKey.generate(), "forged")
        publisher.send(ACTIVITY.topic, *forged, "web-clickstream")
    published = sum(clean[s]["records"] for s in ACTIVITY_SOURCES) + len(events)

    _kill_mid_window(shop, point)

    verdicts = list(shop.ledger.entries(kind="batch"))
    assert len(verdicts) == sum(clean[s]["batches"] for s in ACTIVITY_SOURCES) + 1  # one per message
    assert len(shop.windows()) == (point == "ledgered")
    restarted = shop.collect(activity_events)

    assert restarted.success
    windows = shop.windows()
    received = sum(w.details["received"] for w in windows)
    assert received == published  # no message lost, none counted twice
    assert sum(w.details["accepted"] + w.details["quarantined"] for w in windows) == published
    assert sum(w.details["quarantined"] for w in windows) == len(events)
    recorded = metadata(restarted, "activity_events")
    assert recorded["received"] == (published if point == "collected" else 0)
    assert "replay" not in recorded["quarantine_reasons"]  # the killed run's verdicts did not count
    committed, high = shop.offsets(ACTIVITY.topic)
    assert {r["partition"]: r["end"] for r in windows[-1].details["ranges"]} == committed == high
    assert set(shop.resources["trust_store"].last_sequences()) == set(ACTIVITY_SOURCES)

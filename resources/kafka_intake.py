"""Kafka delivery of signed batches: the landing zone's sources, keys and controls, over topics.

**What a message is.** One Kafka message is one signed batch: its value is
the batch's JSON lines (one Kafka-consumer-shaped record per line, exactly a
landed `.jsonl`), its ``manifest`` header the source's signed manifest (as in
`resources.sources`: source, batch id, topic, record count, SHA-256 of the
value, batch sequence number, Ed25519 signature over the rest), its key the
source id. A window's messages are spooled to scratch as the two files of a
landed batch each and collected by the landing zone's own code. Signed
batches rather than a signature per event, because:

- every control a landed batch passes applies unchanged: the registry's
  verification (registered source for this topic, signature, digest, size),
  replay protection by batch id and signed sequence, per-source rate limits,
  record validation, quarantine with reasons, the ledger's per-batch entries
  and the collection checks that read them;
- replay protection needs a source's batches in sequence order: keyed by
  source id they share one partition, which Kafka delivers in order (events
  keyed by user spread over every partition, and "above the last accepted
  sequence" could not be checked without per-partition state at every
  producer);
- one Ed25519 verification per batch, not per event (~60 µs each: a minute
  of CPU per million events).

The cost: a batch must fit one message (the producer sizes batches below the
broker's ``max.message.bytes``), and one altered record refuses its whole
batch, as it does in the landing zone.

**Where a window starts and ends.** `KafkaIntake.open_window` reads each
partition from where the last recorded window ended up to the high watermark
it saw on opening (what arrives later is the next window's). Where a window
ended is taken from the provenance ledger's ``kafka-window`` entries for this
cluster, group and topic, and from the group's committed offset only for a
partition the ledger has never seen: the ledger, not Kafka, is the record of
what was counted. Offsets are committed manually (``enable.auto.commit`` is
off) and only by `KafkaWindow.commit`, which the caller calls once the window
is stored and ledgered. So a consumer killed before its window is ledgered
committed nothing and the next one reads the window again whole; one killed
after the ledger entry but before the commit starts past it. Either way each
message is counted once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dagster import ConfigurableResource

from resources.integrity import IntegrityLedger, LedgerEntry

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from resources.sources import LandedBatch

WINDOW_KIND = "kafka-window"  # the ledger entry that records a stored window's offsets
MANIFEST_HEADER = "manifest"
MAX_BATCH_ID_CHARS = 200
POLL_S = 0.2


class KafkaWindowError(RuntimeError):
    """A window cannot be read as recorded: nothing of it is counted or committed."""


@dataclass(frozen=True)
class SpooledMessage:
    """One consumed message, spooled as a landed batch, and where it sat in the topic."""

    partition: int
    offset: int
    batch: LandedBatch


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition read by a window.

    `expired` counts offsets the window should have started at but Kafka had
    already deleted (its retention ran out before they were read): never
    received, so in no count, but on the record.
    """

    partition: int
    start: int
    end: int
    expired: int = 0


@dataclass
class KafkaWindow:
    """One consumer's window of a topic: what it read, and the commit that ends it.

    Until `commit` the group's offsets are untouched; `close` without a
    commit gives the window back (the next consumer reads it again).
    """

    consumer: Consumer
    cluster: str
    group: str
    topic: str
    ranges: list[PartitionRange]
    messages: list[SpooledMessage] = field(default_factory=list)

    def batches(self) -> list[LandedBatch]:
        return [m.batch for m in self.messages]

    def details(self) -> dict[str, Any]:
        """What the window's ledger entry must hold for `ledgered_ends` to find where it ended."""
        return {
            "cluster": self.cluster,
            "group": self.group,
            "topic": self.topic,
            "ranges": [asdict(r) for r in self.ranges],
            "messages": len(self.messages),
        }

    def commit(self) -> None:
        """Commit every partition's end offset for the group, synchronously; raises if any is refused."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(self.topic, r.partition, r.end) for r in self.ranges]
        refused = [tp for tp in self.consumer.commit(offsets=offsets, asynchronous=False) if tp.error]
        if refused:
            raise KafkaException(refused[0].error)

    def close(self) -> None:
        self.consumer.close()


def ledgered_ends(entries: Iterable[LedgerEntry], cluster: str, group: str, topic: str) -> dict[int, int]:
    """The offset each partition's last recorded window ended at (the next one to read)."""
    ends: dict[int, int] = {}
    for entry in entries:
        details = entry.details
        if (details.get("cluster"), details.get("group"), details.get("topic")) != (cluster, group, topic):
            continue
        for r in details["ranges"]:
            ends[r["partition"]] = max(ends.get(r["partition"], 0), r["end"])
    return ends


def claimed_batch_id(manifest: bytes | None) -> str:
    """The batch id a manifest header claims, unverified ('' if none): the registry checks it."""
    from resources.sources import MAX_MANIFEST_BYTES  # sources imports this module (its `kafka` field)

    if manifest is None or len(manifest) > MAX_MANIFEST_BYTES:
        return ""
    try:
        claimed = json.loads(manifest).get("batch_id")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return claimed[:MAX_BATCH_ID_CHARS] if isinstance(claimed, str) else ""


class KafkaIntake(ConfigurableResource):
    """The Kafka cluster the sources publish to, and how the collection consumer reaches it.

    Protects the count: each message is counted once across consumer crashes
    and restarts (see the module docstring), and offsets are committed only
    for a window already stored and ledgered. Transport security is
    configuration: SASL over TLS unless told otherwise; credentials come from
    the environment (``dagster.EnvVar``), never from code. `topics` maps a
    registry topic to its Kafka name where the two differ.
    """

    bootstrap_servers: str
    group_id: str = "secure-ai-pipeline-collection"
    topics: dict[str, str] = {}
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "SASL_SSL"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    ssl_key_password: str = ""
    window_timeout_s: float = 120.0  # reading one window to its high watermarks; past it, nothing counts

    def kafka_topic(self, topic: str) -> str:
        return self.topics.get(topic, topic)

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka settings: manual commits only, committed reads, and the transport security."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL_"):
            config.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password,
                }
            )
        tls = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        config.update({name: value for name, value in tls.items() if value})
        return config

    def open_window(self, topic: str, spool: Path, ledger: IntegrityLedger) -> KafkaWindow:
        """Read registry topic `topic`'s next window into `spool`, one landed batch per message.

        Nothing is committed: the caller collects, stores and ledgers the
        window, then calls `KafkaWindow.commit`, and closes it either way.
        """
        from confluent_kafka import Consumer  # the `prod` extra: only a deployment that selects Kafka

        consumer = Consumer(self.consumer_config())
        try:
            window = self._plan(consumer, self.kafka_topic(topic), ledger)
            _consume(window, spool, time.monotonic() + self.window_timeout_s)
        except BaseException:
            consumer.close()
            raise
        return window

    def _plan(self, consumer: Consumer, topic: str, ledger: IntegrityLedger) -> KafkaWindow:
        """The window's range per partition: from the recorded end to the high watermark now."""
        from confluent_kafka import TopicPartition

        timeout = self.window_timeout_s
        metadata = consumer.list_topics(topic, timeout=timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise KafkaWindowError(f"topic {topic!r}: {found.error if found else 'not found'}")
        ends = ledgered_ends(ledger.entries(kind=WINDOW_KIND), metadata.cluster_id, self.group_id, topic)
        partitions = sorted(found.partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        ranges = []
        for p, tp in zip(partitions, committed, strict=True):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout, cached=False
            )
            start = ends.get(p, tp.offset if tp.offset >= 0 else low)
            if start > high:
                raise KafkaWindowError(
                    f"{topic}[{p}] ends at offset {high}, but windows up to {start} were counted: the "
                    "topic was recreated or truncated. The operator must decide where to resume."
                )
            ranges.append(PartitionRange(p, max(start, low), high, expired=max(low - start, 0)))
        return KafkaWindow(consumer, metadata.cluster_id, self.group_id, topic, ranges)


def _consume(window: KafkaWindow, spool: Path, deadline: float) -> None:
    """Spool every message of the window's ranges (each partition in order); later ones are left."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    consumer, topic = window.consumer, window.topic
    pending = {r.partition: r.end for r in window.ranges if r.start < r.end}
    consumer.assign([TopicPartition(topic, r.partition, r.start) for r in window.ranges if r.start < r.end])
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    while pending:
        if time.monotonic() > deadline:
            raise KafkaWindowError(f"{topic}: window not read to its end in time; partitions left {pending}")
        message = consumer.poll(POLL_S)
        if message is None:
            continue
        partition, offset = message.partition(), message.offset()
        if message.error() is not None:
            if message.error().code() != KafkaError._PARTITION_EOF:
                raise KafkaException(message.error())
            reached = offset  # at end-of-partition, the offset is the next one to be written
        else:
            if partition in pending and offset < pending[partition]:
                window.messages.append(SpooledMessage(partition, offset, _spool(message, topic, spool)))
            reached = offset + 1
        if partition in pending and reached >= pending[partition]:
            del pending[partition]
            consumer.pause([TopicPartition(topic, partition)])


def _spool(message: Message, topic: str, spool: Path) -> LandedBatch:
    """Write a message as a landed batch's files, named by its place in the topic (unique, safe).

    The spool is this run's scratch and nothing later trusts it, so the
    writes are plain; the registry verifies the files as it would landed ones.
    """
    from resources.sources import MANIFEST_SUFFIX, LandedBatch

    partition, offset = message.partition(), message.offset()
    name = f"{partition:05d}-{offset:020d}"
    data = spool / f"{name}.jsonl"
    data.write_bytes(message.value() or b"")
    manifest_path = spool / f"{name}{MANIFEST_SUFFIX}"
    manifests = [value for key, value in message.headers() or [] if key == MANIFEST_HEADER]
    # A message with two manifests is ambiguous: it is left with none, so it is refused as unsigned.
    manifest = manifests[0] if len(manifests) == 1 else None
    if manifest is not None:
        manifest_path.write_bytes(manifest)
    batch_id = claimed_batch_id(manifest) or f"{topic}/{partition}/{offset}"
    return LandedBatch(batch_id, manifest_path, data)

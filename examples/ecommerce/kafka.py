"""The shop's sources publishing to Kafka, and a Kafka to publish to where no broker can run.

`KafkaPublisher` is a `BatchSink`: each signed batch becomes one message on
its topic (value: the batch's JSON lines, exactly a landed `.jsonl`; header
``manifest``: the signed manifest; key: the source id, so that one source's
batches stay in order on one partition). ``emit_window(world, publisher,
keys, window=...)`` publishes a whole window. `MockKafka` runs librdkafka's
built-in mock cluster inside this process: tests and demos point the
pipeline's `KafkaIntake` at its bootstrap servers.

Publish the inbox window of `make data` (same seed and size; the sources'
keys and the registry come from it)::

    python -m examples.ecommerce.kafka --bootstrap localhost:9092 --seed 7 --events 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from examples.ecommerce.generate import WINDOWS, default_paths
from examples.ecommerce.sources import SourceKeys, batch_manifest, emit_window, encode_message
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.simulation import build_world
from resources.kafka_intake import MANIFEST_HEADER
from resources.runtime import RuntimeHome

# Records are at most ~550 bytes (reviews; events ~350): 1,500 of them stay under a broker's default
# 1 MB `max.message.bytes`.
KAFKA_BATCH_RECORDS = 1_500
FLUSH_TIMEOUT_S = 60.0


def batch_message(
    source_id: str,
    topic: str,
    messages: list[dict],
    signer: Ed25519PrivateKey | None,
    *,
    batch_id: str,
    created_at: datetime,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of the message that carries one batch, signed for `topic`."""
    value = b"".join(encode_message(m) + b"\n" for m in messages)
    sha256 = hashlib.sha256(value).hexdigest()
    manifest = batch_manifest(source_id, topic, batch_id, len(messages), sha256, created_at, signer)
    return value, [(MANIFEST_HEADER, json.dumps(manifest, sort_keys=True).encode())]


class KafkaPublisher:
    """A Kafka producer that publishes signed batches, one message each (a context manager).

    Idempotent and acknowledged by all in-sync replicas: a retried send
    neither duplicates nor reorders a source's batches. `flush` (also on
    leaving the block, which closes the producer) raises if any message was
    not delivered.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({"enable.idempotence": True, "acks": "all", **config})
        self._failed: list[KafkaError] = []

    def __enter__(self) -> KafkaPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def __call__(
        self,
        source_id: str,
        topic: str,
        messages: list[dict],
        signer: Ed25519PrivateKey | None,
        *,
        batch_id: str,
        created_at: datetime,
    ) -> None:
        """Publish one batch of `messages` as `source_id`, signed by `signer`, on `topic`."""
        value, headers = batch_message(
            source_id, topic, messages, signer, batch_id=batch_id, created_at=created_at
        )
        self.send(topic, value, headers, source_id)

    def send(self, topic: str, value: bytes, headers: list[tuple[str, bytes]], key: str) -> None:
        """Publish one message as given (what an attacker with produce rights can do, too)."""
        self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(error)

    def flush(self) -> None:
        left = self._producer.flush(FLUSH_TIMEOUT_S)
        if left or self._failed:
            raise KafkaException(self._failed[0] if self._failed else f"{left} messages not delivered")


class MockKafka:
    """librdkafka's mock cluster (`test.mock.num.brokers`), alive until `close`.

    Topics are created on first use, with the mock's default partition
    count; consumer groups, committed offsets and watermarks behave as a
    broker's do.
    """

    def __init__(self, brokers: int = 1) -> None:
        # The cluster lives inside this client; other clients reach it through its listeners.
        self._owner = Producer({"test.mock.num.brokers": brokers, "log_level": 4})
        metadata = self._owner.list_topics(timeout=10)
        self.bootstrap_servers = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())

    def __enter__(self) -> MockKafka:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._owner.close()


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers (host:port,...)")
    parser.add_argument(
        "--security-protocol", default="PLAINTEXT", help="e.g. SASL_SSL (a local broker: PLAINTEXT)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-records", type=int, default=KAFKA_BATCH_RECORDS)
    args = parser.parse_args(argv)
    keys = SourceKeys.load_or_create(default_paths(RuntimeHome.from_environment().root)["keys"])
    world = build_world(WorldConfig(seed=args.seed, events=args.events), period=dict(WINDOWS)["inbox"])
    window = world.window_start.strftime("%Y%m%d")
    config = {"bootstrap.servers": args.bootstrap, "security.protocol": args.security_protocol}
    with KafkaPublisher(config) as publisher:
        sources = emit_window(world, publisher, keys, window=window, batch_records=args.batch_records)
    for source, counts in sources.items():
        print(f"inbox {window}: {source} {counts['records']} records/{counts['batches']} messages")
    return sources


if __name__ == "__main__":
    main()

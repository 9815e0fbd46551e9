"""The shop's data sources: the source side of the pipeline's trust boundary.

Three simulated services export what they saw as Kafka-consumer-shaped JSON
records, in batches that they sign with their own Ed25519 key:

- ``web-clickstream`` and ``mobile-app`` (topic ``user-activity``): the
  activity events of the users on each platform (about 60 / 40);
- ``reviews-service`` (topic ``product-reviews``): the reviews.

A batch is two files in ``<landing>/<source_id>/``: ``<batch_id>.jsonl``, one
Kafka message per line, and ``<batch_id>.manifest.json``, which names the
batch, counts and digests its lines and carries the source's signature over
the canonical JSON of all its other fields. The data file is written before
the manifest, each atomically, so a manifest always describes a complete file:
the manifest is the batch's commit record. Published to Kafka instead
(`examples.ecommerce.kafka`), a batch is one message: the same lines as its
value, the same manifest as its header.

An operator enrols the sources once (`enrol_sources`): the registry holds each
source's public key and limits, and is what the pipeline trusts. The private
keys stay with the simulated sources (`SourceKeys`), never with the pipeline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from examples.ecommerce.world.config import EPOCH, WorldConfig
from examples.ecommerce.world.population import WEB_SHARE
from examples.ecommerce.world.simulation import World
from resources.atomic import atomic_write_bytes
from resources.digests import canonical_json

ACTIVITY_TOPIC = "user-activity"
REVIEWS_TOPIC = "product-reviews"
TOPIC_PARTITIONS = {ACTIVITY_TOPIC: 6, REVIEWS_TOPIC: 3}
SOURCES = {
    "web-clickstream": ACTIVITY_TOPIC,
    "mobile-app": ACTIVITY_TOPIC,
    "reviews-service": REVIEWS_TOPIC,
}
PLATFORM_SOURCES = {"web": "web-clickstream", "mobile": "mobile-app"}
REVIEWS_SOURCE = "reviews-service"

SCHEMA_VERSION = 1
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
RATE_HEADROOM = 50  # registry rate limit, in multiples of the busiest source's hourly volume
EXPORT_DELAY = timedelta(seconds=5)  # a batch is created this long after its last record
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_FLUSH_BYTES = 1 << 20
# Records are compact ASCII JSON (non-ASCII escaped); built once because it is hot.
_COMPACT = json.JSONEncoder(separators=(",", ":"))

Message = dict
Offsets = dict[tuple[str, int], int]


def signed_bytes(manifest: dict) -> bytes:
    """What a manifest's signature covers: the canonical JSON of its other fields."""
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"})


@dataclass(frozen=True)
class SourceKeys:
    """The Ed25519 signing keys of the simulated sources, one PEM file per source."""

    private: dict[str, Ed25519PrivateKey]

    @classmethod
    def load_or_create(cls, folder: Path) -> SourceKeys:
        """Load the sources' keys from `folder` (owner-only), creating missing ones."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        return cls({source: load_or_create_key(folder / f"{source}.pem") for source in SOURCES})

    def signer(self, source_id: str) -> Ed25519PrivateKey:
        return self.private[source_id]

    def public_key(self, source_id: str) -> Ed25519PublicKey:
        return self.private[source_id].public_key()

    def public_key_b64(self, source_id: str) -> str:
        """The raw 32-byte public key, base64-encoded, as the registry stores it."""
        raw = self.public_key(source_id).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """A source's private key; refuses a key file that others may read."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} is readable by others; expected mode 0600")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write_bytes(path, pem)
    return key


def enrol_sources(
    registry_path: Path,
    keys: SourceKeys,
    *,
    max_records_per_hour: int,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    sources: dict[str, str] = SOURCES,
) -> Path:
    """Write the source registry the pipeline trusts: public keys and limits per source.

    `sources` maps each source to its topic (the e-commerce sources by default).
    """
    registry = {
        "sources": {
            source: {
                "topic": topic,
                "public_key": keys.public_key_b64(source),
                "max_records_per_hour": max_records_per_hour,
                "max_batch_bytes": max_batch_bytes,
            }
            for source, topic in sources.items()
        }
    }
    registry_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_bytes(registry_path, json.dumps(registry, indent=2, sort_keys=True).encode() + b"\n")
    return registry_path


def default_max_records_per_hour(cfg: WorldConfig) -> int:
    """A rate limit ~50x the busiest source's normal hourly volume for this size.

    A 20x volume spike stays under it (that is drift, not abuse); tests that
    need a rate-limit violation enrol a smaller limit.
    """
    hours = cfg.days * 24
    busiest = max(cfg.events * WEB_SHARE, cfg.events * (1 - WEB_SHARE), cfg.n_reviews)
    return math.ceil(RATE_HEADROOM * busiest / hours)


def write_batch(
    landing: Path,
    source_id: str,
    topic: str,
    messages: Iterable[Message],
    signer: Ed25519PrivateKey | None,
    *,
    batch_id: str,
    created_at: datetime,
    raw_lines: list[bytes] | None = None,
) -> Path:
    """Write one batch into `<landing>/<topic>/` (data, then manifest); return the manifest path.

    `signer=None` leaves the manifest unsigned (no "signature" field).
    `raw_lines`, when given, replaces `messages`: each item is written as one
    line, verbatim, followed by a newline, so that tests can land malformed data.
    """
    for name in (source_id, batch_id, topic):
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"unsafe name for a landing file: {name!r}")
    folder = landing / topic  # consumers read a topic, whoever claims to have sent it
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = raw_lines if raw_lines is not None else (encode_message(m) for m in messages)
    records, digest = _write_lines(folder / f"{batch_id}.jsonl", lines)
    manifest = batch_manifest(source_id, topic, batch_id, records, digest, created_at, signer)
    manifest_path = folder / f"{batch_id}.manifest.json"
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    return manifest_path


def batch_manifest(
    source_id: str,
    topic: str,
    batch_id: str,
    records: int,
    sha256: str,
    created_at: datetime,
    signer: Ed25519PrivateKey | None,
) -> dict:
    """A batch's manifest, signed by `signer` over all its other fields (None: no "signature")."""
    manifest: dict = {
        "source": source_id,
        "batch_id": batch_id,
        "topic": topic,
        "schema_version": SCHEMA_VERSION,
        "records": records,
        "digest": {"algorithm": "sha256", "value": sha256},
        "created_at": iso_z(created_at),
        "sequence": batch_sequence(created_at),
    }
    if signer is not None:
        manifest["signature"] = base64.b64encode(signer.sign(signed_bytes(manifest))).decode()
    return manifest


def encode_message(message: Message) -> bytes:
    """One line of a batch file."""
    return _COMPACT.encode(message).encode()


def kafka_message(topic: str, offsets: Offsets, key: str, payload: dict, time: str) -> Message:
    """The record a Kafka consumer would hand over for `payload`, partitioned by key."""
    partition = zlib.crc32(key.encode()) % TOPIC_PARTITIONS[topic]
    offset = offsets.get((topic, partition), 0)
    offsets[(topic, partition)] = offset + 1
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": _COMPACT.encode(payload),
        "timestamp": epoch_ms(time),
    }


class BatchSink(Protocol):
    """Where a source delivers a batch: the landing zone (`write_batch`) or a Kafka topic."""

    def __call__(
        self,
        source_id: str,
        topic: str,
        messages: list[Message],
        signer: Ed25519PrivateKey | None,
        *,
        batch_id: str,
        created_at: datetime,
    ) -> object: ...


def emit_window(
    world: World,
    landing: Path | BatchSink,
    keys: SourceKeys,
    *,
    window: str,
    batch_records: int = 20_000,
    offsets: Offsets | None = None,
) -> dict[str, dict[str, int]]:
    """Deliver every event and review of `world` as signed batches, one batch at a time.

    `landing` is a landing-zone folder, or any other `BatchSink`. `offsets`
    is the next offset per (topic, partition); it is updated in place, so
    windows emitted in turn continue one Kafka log. Returns
    ``{source_id: {"batches": n, "records": n}}``.
    """
    offsets = {} if offsets is None else offsets
    deliver = partial(write_batch, landing) if isinstance(landing, Path) else landing
    streams = {
        source: _BatchStream(deliver, source, keys.signer(source), window, batch_records)
        for source in SOURCES
    }
    for event in world.activity_events():
        user = event["user_id"]
        message = kafka_message(ACTIVITY_TOPIC, offsets, user, event, event["event_time"])
        streams[PLATFORM_SOURCES[world.platform_of(user)]].add(message)
    for review in world.reviews():
        user = review["user_id"]
        message = kafka_message(REVIEWS_TOPIC, offsets, user, review, review["review_time"])
        streams[REVIEWS_SOURCE].add(message)
    return {source: stream.close() for source, stream in streams.items()}


class _BatchStream:
    """Collects one source's messages and delivers a signed batch every `size` records."""

    def __init__(
        self, deliver: BatchSink, source: str, signer: Ed25519PrivateKey, window: str, size: int
    ) -> None:
        self.deliver, self.source, self.signer = deliver, source, signer
        self.window, self.size = window, size
        self.pending: list[Message] = []
        self.batches = self.records = 0

    def add(self, message: Message) -> None:
        self.pending.append(message)
        if len(self.pending) >= self.size:
            self._flush()

    def close(self) -> dict[str, int]:
        """Write what is left; return the source's batch and record counts."""
        self._flush()
        return {"batches": self.batches, "records": self.records}

    def _flush(self) -> None:
        if not self.pending:
            return
        last = EPOCH + timedelta(milliseconds=self.pending[-1]["timestamp"])
        self.deliver(
            self.source,
            SOURCES[self.source],
            self.pending,
            self.signer,
            batch_id=f"{self.source}-{self.window}-{self.batches:06d}",
            created_at=last + EXPORT_DELAY,
        )
        self.batches += 1
        self.records += len(self.pending)
        self.pending = []


def _write_lines(path: Path, lines: Iterable[bytes]) -> tuple[int, str]:
    """Write newline-terminated lines atomically; return their count and SHA-256."""
    digest, count = hashlib.sha256(), 0

    def chunks() -> Iterator[bytes]:
        nonlocal count
        buffer: list[bytes] = []
        size = 0
        for line in lines:
            buffer.append(line + b"\n")
            size += len(line) + 1
            count += 1
            if size >= _FLUSH_BYTES:
                yield b"".join(buffer)
                buffer, size = [], 0
        yield b"".join(buffer)

    def hashed() -> Iterator[bytes]:
        for chunk in chunks():
            digest.update(chunk)
            yield chunk

    atomic_write_bytes(path, hashed())
    return count, digest.hexdigest()


def batch_sequence(created_at: datetime) -> int:
    """A source's batch sequence number: its export clock in microseconds (monotonic per source)."""
    return int(created_at.timestamp() * 1_000_000)


def iso_z(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and "Z"."""
    if moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(iso: str) -> int:
    """Milliseconds since the epoch of an ISO-8601 "Z" timestamp."""
    return (datetime.fromisoformat(iso) - EPOCH) // timedelta(milliseconds=1)

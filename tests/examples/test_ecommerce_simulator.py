"""The e-commerce simulator: deterministic, realistic, and signed at the source."""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import re
import tracemalloc
import zlib
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from examples.ecommerce import generate as cli
from examples.ecommerce.generate import default_paths, generate
from examples.ecommerce.sources import (
    ACTIVITY_TOPIC,
    REVIEWS_SOURCE,
    SOURCES,
    TOPIC_PARTITIONS,
    SourceKeys,
    canonical_json,
    default_max_records_per_hour,
    encode_message,
    epoch_ms,
    kafka_message,
    signed_bytes,
    write_batch,
)
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.population import NEW_ACCOUNT_SHARE, build_population
from examples.ecommerce.world.simulation import build_world, item_index, user_index

EVENTS = 3_000
ACTIVITY_FIELDS = {
    "event_id",
    "event_type",
    "user_id",
    "item_id",
    "session_id",
    "event_time",
    "price",
    "account_created",
}
REVIEW_FIELDS = {
    "review_id",
    "user_id",
    "item_id",
    "rating",
    "title",
    "text",
    "review_time",
    "account_created",
}
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
POSITIVE = {
    "excellent",
    "love",
    "perfect",
    "perfectly",
    "best",
    "great",
    "recommend",
    "fantastic",
    "good",
    "happy",
    "solid",
    "nice",
}
NEGATIVE = {
    "terrible",
    "waste",
    "worst",
    "broke",
    "useless",
    "disappointed",
    "disappointing",
    "awful",
    "cheap",
    "poor",
    "poorly",
    "flimsy",
    "avoid",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime home with both windows of a 3,000-event shop landed."""
    home = tmp_path_factory.mktemp("shop")
    generate(7, EVENTS, home)
    return home


@pytest.fixture(scope="module")
def world():
    """A larger in-memory shop, for statistics that need a few hundred reviews."""
    return build_world(WorldConfig(seed=7, events=20_000))


def landed_files(folder: Path, pattern: str = "*.jsonl") -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern))}


def messages(folder: Path, source: str) -> list[dict]:
    """The messages of one source, in batch order."""
    lines = []
    for path in sorted((folder / SOURCES[source]).glob(f"{source}-*.jsonl")):
        lines += [json.loads(line) for line in path.read_bytes().splitlines()]
    return lines


def payloads(folder: Path, source: str) -> list[dict]:
    return [json.loads(m["value"]) for m in messages(folder, source)]


def activity(folder: Path) -> list[dict]:
    events = payloads(folder, "web-clickstream") + payloads(folder, "mobile-app")
    return sorted(events, key=lambda e: e["event_time"])


def verify(manifest_path: Path, registry: dict) -> None:
    """What the pipeline's collector checks; raises on any mismatch."""
    manifest = json.loads(manifest_path.read_bytes())
    entry = registry["sources"][manifest["source"]]
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"]))
    key.verify(base64.b64decode(manifest["signature"]), signed_bytes(manifest))
    data = manifest_path.with_name(f"{manifest['batch_id']}.jsonl").read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["digest"]["value"]:
        raise ValueError("digest mismatch")
    if len(data.splitlines()) != manifest["records"] or manifest["topic"] != entry["topic"]:
        raise ValueError("record count or topic mismatch")


def test_same_seed_gives_identical_bytes_and_another_seed_differs(home, tmp_path):
    inbox = default_paths(home)["inbox"]
    generate(7, EVENTS, tmp_path / "again")
    generate(8, EVENTS, tmp_path / "other")
    again = landed_files(default_paths(tmp_path / "again")["inbox"])
    other = landed_files(default_paths(tmp_path / "other")["inbox"])
    assert again == landed_files(inbox)
    assert all(other[name] != data for name, data in again.items())


def test_every_event_and_review_is_landed_once(home):
    for window in ("inbox", "reference"):
        folder = default_paths(home)[window]
        events = activity(folder)
        reviews = payloads(folder, REVIEWS_SOURCE)
        assert len(events) == EVENTS
        assert len(reviews) == WorldConfig(events=EVENTS).n_reviews
        assert len({e["event_id"] for e in events}) == EVENTS
        assert len({r["review_id"] for r in reviews}) == len(reviews)


def test_records_have_the_documented_shape(home):
    folder = default_paths(home)["inbox"]
    for source in SOURCES:
        for message in messages(folder, source):
            payload = json.loads(message["value"])
            assert set(message) == {"topic", "partition", "offset", "key", "value", "timestamp"}
            assert message["topic"] == SOURCES[source]
            assert message["key"] == payload["user_id"]
            time = payload.get("event_time") or payload["review_time"]
            assert ISO_MS_Z.fullmatch(time) and message["timestamp"] == epoch_ms(time)
            assert re.fullmatch(r"u\d{7}", payload["user_id"])
            assert re.fullmatch(r"i\d{6}", payload["item_id"])
            assert payload["account_created"] <= time[:10]
            if source == REVIEWS_SOURCE:
                assert set(payload) == REVIEW_FIELDS
                assert re.fullmatch(r"r\d{8}", payload["review_id"])
                assert payload["rating"] in range(1, 6) and payload["title"] and payload["text"]
            else:
                assert set(payload) == ACTIVITY_FIELDS
                assert re.fullmatch(r"e[0-9a-f]{12}", payload["event_id"])
                assert payload["price"] > 0 and round(payload["price"], 2) == payload["price"]


def test_users_are_split_between_web_and_mobile(home):
    folder = default_paths(home)["inbox"]
    web = {e["user_id"] for e in payloads(folder, "web-clickstream")}
    mobile = {e["user_id"] for e in payloads(folder, "mobile-app")}
    assert not web & mobile
    assert 0.45 < len(web) / len(web | mobile) < 0.75


def test_funnel_is_plausible_and_ordered(home):
    events = activity(default_paths(home)["inbox"])
    share = Counter(e["event_type"] for e in events)
    assert 0.62 < share["view"] / EVENTS < 0.80
    assert 0.12 < share["add_to_cart"] / EVENTS < 0.28
    assert 0.05 < share["purchase"] / EVENTS < 0.16
    seen: set[tuple[str, str, str]] = set()
    for e in events:
        step = (e["session_id"], e["item_id"])
        if e["event_type"] == "add_to_cart":
            assert (*step, "view") in seen
        elif e["event_type"] == "purchase":
            assert (*step, "add_to_cart") in seen
        seen.add((*step, e["event_type"]))


def test_sessions_are_paced_and_separated(home):
    events = activity(default_paths(home)["inbox"])
    start = datetime(2026, 11, 1, tzinfo=UTC)
    by_user = defaultdict(list)
    for e in events:
        moment = datetime.fromisoformat(e["event_time"])
        assert start <= moment < start + timedelta(days=7)
        by_user[e["user_id"]].append((moment, e["session_id"]))
    owner = {}
    for user, timeline in by_user.items():
        for (before, s1), (after, s2) in zip(timeline, timeline[1:], strict=False):
            gap = after - before
            if s1 == s2:
                assert timedelta(seconds=30) <= gap <= timedelta(minutes=10)
            else:
                assert gap > timedelta(minutes=30)
                assert s2 not in owner  # a session never resumes
            owner[s1] = user
        owner[timeline[-1][1]] = user
    assert len(owner) == len({e["session_id"] for e in events})  # one user per session


def test_every_manifest_verifies_with_its_sources_public_key(home):
    registry = json.loads(default_paths(home)["registry"].read_bytes())
    manifests = sorted(home.rglob("*.manifest.json"))
    assert len(manifests) == 2 * len(SOURCES)
    for path in manifests:
        verify(path, registry)


def test_tampered_batches_fail_verification(home, tmp_path):
    registry = json.loads(default_paths(home)["registry"].read_bytes())
    original = next(default_paths(home)["inbox"].rglob("web-clickstream-*.manifest.json"))
    folder = tmp_path / "web-clickstream"
    folder.mkdir()
    data = original.with_name(original.name.replace(".manifest.json", ".jsonl"))
    changed = folder / data.name
    changed.write_bytes(data.read_bytes().replace(b"view", b"purchase", 1))
    (folder / original.name).write_bytes(original.read_bytes())
    with pytest.raises(ValueError, match="digest"):
        verify(folder / original.name, registry)
    manifest = json.loads(original.read_bytes()) | {"records": 1}
    (folder / original.name).write_text(json.dumps(manifest))
    with pytest.raises(InvalidSignature):
        verify(folder / original.name, registry)


def test_unsigned_batch_has_no_signature_and_raw_lines_land_verbatim(tmp_path):
    raw = [b"{not json", b'{"topic":"user-activity"}']
    path = write_batch(
        tmp_path,
        "web-clickstream",
        ACTIVITY_TOPIC,
        [],
        None,
        batch_id="web-clickstream-attack-000000",
        created_at=datetime(2026, 11, 2, tzinfo=UTC),
        raw_lines=raw,
    )
    manifest = json.loads(path.read_bytes())
    data = (tmp_path / "user-activity" / "web-clickstream-attack-000000.jsonl").read_bytes()
    assert "signature" not in manifest
    assert data == b"{not json\n" + b'{"topic":"user-activity"}\n'
    assert manifest["records"] == 2
    assert manifest["digest"] == {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}
    assert manifest["created_at"] == "2026-11-02T00:00:00.000Z"
    assert not list((tmp_path / "user-activity").glob(".*"))  # no temp file left behind


def test_batch_names_cannot_leave_the_landing_folder(tmp_path):
    with pytest.raises(ValueError, match="unsafe"):
        write_batch(
            tmp_path,
            "web-clickstream",
            ACTIVITY_TOPIC,
            [],
            None,
            batch_id="../escape",
            created_at=datetime.now(UTC),
        )


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": ["é", {"d": 2, "c": None}]}) == (
        '{"a":["é",{"c":null,"d":2}],"b":1}'.encode()
    )


def test_offsets_form_one_monotonic_log_per_partition(home):
    logs = defaultdict(list)
    for window in ("reference", "inbox"):  # emitted in this order
        folder = default_paths(home)[window]
        for source in SOURCES:
            source_log = defaultdict(list)
            for m in messages(folder, source):
                assert m["partition"] == zlib.crc32(m["key"].encode()) % TOPIC_PARTITIONS[m["topic"]]
                source_log[m["partition"]].append(m["offset"])
                logs[(m["topic"], m["partition"])].append(m["offset"])
            for offsets in source_log.values():
                assert offsets == sorted(set(offsets))
    for offsets in logs.values():
        assert sorted(offsets) == list(range(len(offsets)))
    for partition in range(TOPIC_PARTITIONS[ACTIVITY_TOPIC]):
        last_reference = max(
            m["offset"]
            for s in ("web-clickstream", "mobile-app")
            for m in messages(default_paths(home)["reference"], s)
            if m["partition"] == partition
        )
        first_inbox = min(
            m["offset"]
            for s in ("web-clickstream", "mobile-app")
            for m in messages(default_paths(home)["inbox"], s)
            if m["partition"] == partition
        )
        assert first_inbox == last_reference + 1


def test_reference_window_is_the_week_before_with_the_same_population(home):
    reference = activity(default_paths(home)["reference"])
    inbox = activity(default_paths(home)["inbox"])
    assert reference[-1]["event_time"] < "2026-11-01" <= inbox[0]["event_time"]
    assert reference[0]["event_time"] >= "2026-10-25"
    price = {e["item_id"]: e["price"] for e in reference}
    created = {e["user_id"]: e["account_created"] for e in reference}
    shared = [e for e in inbox if e["item_id"] in price and e["user_id"] in created]
    assert len(shared) > EVENTS / 2
    assert all(price[e["item_id"]] == e["price"] for e in shared)
    assert all(created[e["user_id"]] == e["account_created"] for e in shared)
    assert [e["event_id"] for e in reference] != [e["event_id"] for e in inbox[: len(reference)]]


def test_ratings_correlate_with_text_sentiment(world):
    reviews = list(world.reviews())
    score, rating = [], []
    for r in reviews:
        words = re.findall(r"[a-z]+", f"{r['title']} {r['text']}".lower())
        score.append(sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words))
        rating.append(r["rating"])
    correlation = np.corrcoef(score, rating)[0, 1]
    assert 0.5 < correlation < 0.95  # learnable, but not perfectly
    disagree = sum((s > 0) != (y >= 4) for s, y in zip(score, rating, strict=True) if s != 0)
    assert disagree > 0


def test_ratings_are_j_shaped_and_follow_affinity(world):
    reviews = list(world.reviews())
    stars = Counter(r["rating"] for r in reviews)
    assert stars[5] > stars[4] > stars[3] and stars[1] > stars[2]
    users = np.array([user_index(r["user_id"]) for r in reviews])
    items = np.array([item_index(r["item_id"]) for r in reviews])
    affinity = world.population.affinity(users, items)
    assert np.corrcoef(affinity, [r["rating"] for r in reviews])[0, 1] > 0.5


def test_reviewers_review_items_they_interacted_with(world):
    last_touch = {}
    for e in world.activity_events():
        last_touch[(e["user_id"], e["item_id"])] = e["event_time"]
    for r in world.reviews():
        assert r["review_time"] > last_touch[(r["user_id"], r["item_id"])]


def test_purchases_follow_latent_affinity(world):
    purchases = [e for e in world.activity_events() if e["event_type"] == "purchase"]
    users = np.array([user_index(e["user_id"]) for e in purchases])
    items = np.array([item_index(e["item_id"]) for e in purchases])
    random_items = np.random.default_rng(0).integers(world.config.n_items, size=len(items))
    bought = world.population.affinity(users, items).mean()
    random = world.population.affinity(users, random_items).mean()
    assert bought - random > 0.5


def test_a_few_accounts_are_new():
    created = build_population(WorldConfig(events=200_000)).user_created_ms
    start_ms = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
    assert NEW_ACCOUNT_SHARE / 2 < (created >= start_ms).mean() < NEW_ACCOUNT_SHARE * 2
    assert np.median(start_ms - created) > 60 * 86_400_000  # most accounts are months old


def test_generators_stream_in_bounded_memory():
    big = build_world(WorldConfig(events=150_000))
    assert inspect.isgenerator(big.activity_events()) and inspect.isgenerator(big.reviews())
    tracemalloc.start()
    count = sum(1 for _ in big.activity_events())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 150_000
    assert peak < 40 * 2**20  # a list of all 150,000 payload dicts would take ~100 MiB


def test_kafka_message_encoding_round_trips():
    offsets = {}
    payload = {"user_id": "u0000001", "event_time": "2026-11-01T00:00:00.001Z", "text": "naïve"}
    first = kafka_message(ACTIVITY_TOPIC, offsets, "u0000001", payload, payload["event_time"])
    second = kafka_message(ACTIVITY_TOPIC, offsets, "u0000001", payload, payload["event_time"])
    assert (first["offset"], second["offset"]) == (0, 1)
    assert first["timestamp"] == 1_793_491_200_001
    assert json.loads(json.loads(encode_message(first))["value"]) == payload


def test_keys_are_private_persistent_and_enrolled(home):
    paths = default_paths(home)
    assert paths["keys"].stat().st_mode & 0o777 == 0o700
    for pem in paths["keys"].glob("*.pem"):
        assert pem.stat().st_mode & 0o777 == 0o600
    assert paths["registry"].stat().st_mode & 0o777 == 0o600
    keys = SourceKeys.load_or_create(paths["keys"])
    registry = json.loads(paths["registry"].read_bytes())["sources"]
    assert {s: e["public_key"] for s, e in registry.items()} == {s: keys.public_key_b64(s) for s in SOURCES}
    assert {e["max_batch_bytes"] for e in registry.values()} == {64 * 2**20}


def test_readable_private_key_is_refused(tmp_path):
    SourceKeys.load_or_create(tmp_path)
    (tmp_path / "mobile-app.pem").chmod(0o644)
    with pytest.raises(PermissionError):
        SourceKeys.load_or_create(tmp_path)


def test_default_rate_limit_tolerates_a_20x_spike_but_not_more_than_100x(home):
    cfg = WorldConfig(events=EVENTS)
    limit = default_max_records_per_hour(cfg)
    registry = json.loads(default_paths(home)["registry"].read_bytes())["sources"]
    assert {e["max_records_per_hour"] for e in registry.values()} == {limit}
    folder = default_paths(home)["inbox"]
    busiest = max(len(messages(folder, source)) for source in SOURCES) / (cfg.days * 24)
    assert 20 * busiest < limit < 100 * busiest


def test_cli_lands_both_windows_and_replaces_stale_batches(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "home"))
    stale = tmp_path / "in" / "user-activity" / "mobile-app-20261101-000099.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old\n")
    cli.main(["--events", "500", "--landing", str(tmp_path / "in")])
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["reference", "inbox"]
    assert not stale.exists()
    assert len(list((tmp_path / "in").rglob("*.manifest.json"))) == len(SOURCES)
    reference = default_paths(tmp_path / "home")["reference"]
    assert len(list(reference.rglob("*.manifest.json"))) == len(SOURCES)

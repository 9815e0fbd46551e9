"""The BPR recommender: quality against popularity, determinism, safe storage, shilling."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from domain.ecommerce.ranking_metrics import evaluate, popularity_baseline, target_exposure
from domain.ecommerce.recommender import (
    IdIndex,
    MatrixFactorization,
    TrainConfig,
    build_from_architecture,
    load_model,
    recommend,
    save_model,
    split_holdout,
    train_bpr,
)
from domain.ecommerce.shilling import inject_shilling, pick_shilling_target, shilling_sensitivity
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.simulation import build_world
from resources.model_files import CONFIG_FILE, WEIGHTS_FILE

WORLD_EVENTS = 40_000  # 800 users, 80 items: MF has taste to learn, training takes under a second
QUICK = TrainConfig(epochs=3)
T0 = pd.Timestamp("2026-11-01", tz="UTC")


def interactions_from_events(events: Iterator[dict]) -> pd.DataFrame:
    """The processing stage's interaction table, built with pandas from raw activity events."""
    frame = pd.DataFrame(events, columns=["event_type", "user_id", "item_id", "session_id", "event_time"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    counts = pd.crosstab([frame["user_id"], frame["item_id"]], frame["event_type"])
    pairs = frame.groupby(["user_id", "item_id"])
    table = pd.DataFrame(
        {
            "views": counts.get("view", 0),
            "carts": counts.get("add_to_cart", 0),
            "purchases": counts.get("purchase", 0),
            "sessions": pairs["session_id"].nunique(),
            "first_seen": pairs["event_time"].min(),
            "last_seen": pairs["event_time"].max(),
        }
    ).reset_index()
    counted = ["views", "carts", "purchases", "sessions"]
    table[counted] = table[counted].astype("int64")
    table["confidence"] = 1.0 + 0.4 * (table["views"] + 3 * table["carts"] + 5 * table["purchases"])
    table["label"] = (table["carts"] + table["purchases"] > 0).astype("int64")
    return table


def table(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """A hand-built interaction table from (user_id, item_id, minutes after T0 of last_seen)."""
    return pd.DataFrame(
        {
            "user_id": [user for user, _, _ in rows],
            "item_id": [item for _, item, _ in rows],
            "views": 1,
            "carts": 0,
            "purchases": 0,
            "sessions": 1,
            "first_seen": [T0 + pd.Timedelta(minutes=minutes) for _, _, minutes in rows],
            "last_seen": [T0 + pd.Timedelta(minutes=minutes) for _, _, minutes in rows],
            "confidence": 1.4,
            "label": 0,
        }
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def interactions() -> pd.DataFrame:
    return interactions_from_events(build_world(WorldConfig(seed=7, events=WORLD_EVENTS)).activity_events())


@pytest.fixture(scope="module")
def index(interactions: pd.DataFrame) -> IdIndex:
    return IdIndex.from_interactions(interactions)


@pytest.fixture(scope="module")
def split(interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_holdout(interactions)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex) -> MatrixFactorization:
    return train_bpr(split[0], index, TrainConfig())


# --- quality -------------------------------------------------------------------------------------


def test_matrix_factorisation_beats_popularity_on_held_out_items(
    model: MatrixFactorization, split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex
) -> None:
    train, heldout = split
    mf = evaluate(model, train, heldout, index)
    popular = popularity_baseline(train, heldout, index)
    report = f"MF {mf} vs popularity {popular}"
    assert mf["users"] == popular["users"] == heldout["user_id"].nunique() > 500, report
    assert mf["recall@10"] > popular["recall@10"] + 0.05, report
    assert mf["ndcg@10"] > popular["ndcg@10"] + 0.05, report


def test_metrics_match_a_hand_computed_ranking() -> None:
    # popularity in train: c (3 users) > b (2) > a (1); d is seen by nobody
    train = table([("u1", "c", 0), ("u2", "c", 0), ("u3", "c", 0), ("u2", "b", 0), ("u3", "b", 0)])
    train = pd.concat([train, table([("u4", "a", 0)])], ignore_index=True)
    heldout = table([("u1", "b", 1), ("u2", "a", 1), ("u4", "d", 1)])
    index = IdIndex.from_interactions(pd.concat([train, heldout]))
    metrics = popularity_baseline(train, heldout, index, k=2)
    # u1 (c seen) ranks b, a: hit at rank 1; u2 (c, b seen) ranks a, d: hit at rank 1;
    # u4 (a seen) ranks c, b: d missed
    assert metrics == {"recall@2": pytest.approx(2 / 3), "ndcg@2": pytest.approx(2 / 3), "users": 3}
    metrics = popularity_baseline(train, heldout.iloc[[0]], index, k=2)
    assert metrics["ndcg@2"] == pytest.approx(1.0)
    late = table([("u3", "a", 1)])  # u3 (c, b seen) ranks a, d: hit at rank 1
    assert popularity_baseline(train, late, index, k=1)["recall@1"] == 1.0
    assert popularity_baseline(train, table([("u3", "d", 1)]), index, k=2)["ndcg@2"] == pytest.approx(
        1 / np.log2(3)
    )


def test_recommend_ranks_unseen_items_by_score(model: MatrixFactorization, index: IdIndex) -> None:
    user = index.users[0]
    everything = recommend(model, index, user, k=index.n_items, exclude=set())
    exclude = {item for item, _ in everything[:3]} | {"not-an-item"}
    top = recommend(model, index, user, k=5, exclude=exclude)
    assert [item for item, _ in top] == [item for item, _ in everything[3:8]]
    scores = [score for _, score in top]
    assert scores == sorted(scores, reverse=True)
    pairs = model.score(
        torch.from_numpy(index.user_positions([user] * 5)),
        torch.from_numpy(index.item_positions([item for item, _ in top])),
    )
    assert pairs.tolist() == pytest.approx(scores)
    with pytest.raises(KeyError, match="unknown user"):
        recommend(model, index, "u-nobody", k=5, exclude=set())


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_another_seed_does_not(
    split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex
) -> None:
    train = split[0]
    first = train_bpr(train, index, QUICK).state_dict()
    shuffled = train.sample(frac=1.0, random_state=1)  # row order must not matter
    again = train_bpr(shuffled, index, QUICK).state_dict()
    other = train_bpr(train, index, replace(QUICK, seed=8)).state_dict()
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["user_embedding.weight"], other["user_embedding.weight"])
    assert not torch.equal(first["item_embedding.weight"], other["item_embedding.weight"])


def test_training_reports_a_falling_loss(split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex) -> None:
    lines: list[str] = []
    train_bpr(split[0], index, QUICK, log=lines.append)
    losses = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert len(losses) == QUICK.epochs
    assert losses[-1] < losses[0]


def test_train_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="invalid training configuration"):
        TrainConfig(epochs=0)
    assert TrainConfig.from_dict(QUICK.to_dict()) == QUICK


# --- storage -------------------------------------------------------------------------------------


@pytest.fixture
def saved(model: MatrixFactorization, index: IdIndex, tmp_path: Path) -> Path:
    metrics = {"recall@10": 0.5, "ndcg@10": 0.3, "users": 3}
    return save_model(model, index, TrainConfig(), metrics, tmp_path / "models" / "v3", version=3)


def test_save_and_load_round_trip_gives_identical_scores(
    saved: Path, model: MatrixFactorization, index: IdIndex
) -> None:
    loaded, loaded_index, config = load_model(saved)
    users = torch.arange(index.n_users)
    assert torch.equal(loaded.scores_for_users(users), model.scores_for_users(users))
    assert loaded_index == index
    assert not loaded.training
    assert config["version"] == 3
    assert config["metrics"]["recall@10"] == 0.5
    assert config["architecture"] == model.architecture()
    assert TrainConfig.from_dict(config["train_config"]) == TrainConfig()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["v3"]  # no staging folder left behind


def test_model_directory_holds_no_pickle(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    raw = (saved / WEIGHTS_FILE).read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, JSON header, raw bytes
    header = json.loads(raw[8 : 8 + header_size])
    assert set(header) - {"__metadata__"} == {
        "user_embedding.weight",
        "item_embedding.weight",
        "item_bias.weight",
    }
    end = max(entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__")
    assert len(raw) == 8 + header_size + end  # nothing but the declared tensors
    assert json.loads((saved / CONFIG_FILE).read_text(encoding="utf-8"))["version"] == 3
    for path in saved.iterdir():
        opening = path.read_bytes()[:2]
        assert opening[:1] != b"\x80" and opening != b"PK", f"{path.name} looks like a pickle or a zip"


def edit_config(directory: Path, change) -> None:
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    change(config)
    (directory / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")


def test_load_refuses_weights_that_do_not_match_the_architecture(saved: Path) -> None:
    edit_config(saved, lambda config: config["architecture"].update(dim=16))
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_model(saved)


def test_load_refuses_an_architecture_that_disagrees_with_the_id_index(saved: Path) -> None:
    edit_config(
        saved, lambda config: config["architecture"].update(n_items=config["architecture"]["n_items"] + 1)
    )
    with pytest.raises(ValueError, match="id index has"):
        load_model(saved)


def test_load_refuses_renamed_or_extra_tensors(saved: Path, model: MatrixFactorization) -> None:
    tensors = dict(model.state_dict())
    tensors["backdoor.weight"] = torch.zeros(2, 2)
    save_file(tensors, saved / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="backdoor.weight"):
        load_model(saved)


def test_load_refuses_a_pickle_payload_in_place_of_the_weights(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # A protocol-0 pickle that runs `touch <marker>` when unpickled (written as bytes, never pickled here).
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    (saved / WEIGHTS_FILE).write_bytes(payload)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model(saved)
    assert not marker.exists()


@pytest.mark.parametrize(
    "arch, message",
    [
        ({"name": "pickled_module", "n_users": 2, "n_items": 2, "dim": 2}, "unknown architecture"),
        ({"name": "matrix_factorization", "n_users": 2, "n_items": 0, "dim": 2}, "positive integers"),
        ({"name": "matrix_factorization", "n_users": 2, "n_items": 2, "dim": "2"}, "positive integers"),
        ({"name": "matrix_factorization", "n_users": 2, "n_items": 2}, "exactly the keys"),
    ],
)
def test_architecture_is_validated_before_anything_is_built(arch: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_from_architecture(arch)


def test_save_refuses_to_overwrite_a_model_version(
    saved: Path, model: MatrixFactorization, index: IdIndex
) -> None:
    before = (saved / WEIGHTS_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="written once"):
        save_model(model, index, TrainConfig(), {}, saved, version=4)
    assert (saved / WEIGHTS_FILE).read_bytes() == before


# --- split ---------------------------------------------------------------------------------------


def test_split_holds_out_each_users_latest_unseen_item(
    interactions: pd.DataFrame, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, heldout = split
    assert len(train) + len(heldout) == len(interactions)
    assert not heldout["user_id"].duplicated().any()
    seen = set(zip(train["user_id"], train["item_id"], strict=True))
    assert not any(pair in seen for pair in zip(heldout["user_id"], heldout["item_id"], strict=True))
    sizes = interactions.groupby("user_id").size()
    assert set(heldout["user_id"]) == set(sizes[sizes >= 3].index)
    assert set(sizes[sizes < 3].index) <= set(train["user_id"])
    latest_in_train = train.groupby("user_id")["last_seen"].max()
    assert (heldout.set_index("user_id")["last_seen"] >= latest_in_train[heldout["user_id"]]).all()


def test_split_keeps_short_histories_and_breaks_ties_by_item() -> None:
    rows = [("u1", "a", 0), ("u1", "b", 5), ("u1", "c", 5), ("u2", "a", 0), ("u2", "b", 9)]
    train, heldout = split_holdout(table(rows))
    assert list(zip(heldout["user_id"], heldout["item_id"], strict=True)) == [("u1", "c")]
    assert sorted(train["user_id"]) == ["u1", "u1", "u2", "u2"]
    reversed_train, reversed_heldout = split_holdout(table(rows[::-1]))
    pd.testing.assert_frame_equal(reversed_heldout, heldout)
    pd.testing.assert_frame_equal(reversed_train, train)


# --- shilling ------------------------------------------------------------------------------------


def test_injected_accounts_look_like_real_shoppers(
    split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex
) -> None:
    train = split[0]
    target = pick_shilling_target(train)
    poisoned, poisoned_index = inject_shilling(
        train, index, target_item=target, fake_users=20, filler_items=9, seed=1
    )
    fake = poisoned.iloc[len(train) :]
    pd.testing.assert_frame_equal(poisoned.iloc[: len(train)], train)
    assert poisoned.dtypes.equals(train.dtypes)
    assert fake["user_id"].nunique() == 20 and set(fake["user_id"]).isdisjoint(index.users)
    assert (fake.groupby("user_id").size() == 10).all()
    assert (fake.groupby("user_id")["item_id"].nunique() == 10).all()
    assert set(fake.loc[fake["label"] == 1, "item_id"]) == {target}
    assert (fake.loc[fake["item_id"] == target, "confidence"] == train["confidence"].max()).all()
    popularity = train.groupby("item_id").size()
    assert popularity[fake.loc[fake["item_id"] != target, "item_id"]].mean() > popularity.mean()
    assert poisoned_index.n_users == index.n_users + 20 and poisoned_index.items == index.items


def test_pick_shilling_target_is_the_least_popular_item(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train = split[0]
    popularity = train.groupby("item_id").size()
    target = pick_shilling_target(train)
    assert popularity[target] == popularity.min()
    assert pick_shilling_target(train.sample(frac=1.0, random_state=3)) == target


def test_fake_accounts_push_an_unpopular_item_into_real_users_top_10(
    split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex
) -> None:
    """Without the confidence cap, 5 % fake accounts reach half the shop."""
    train = split[0]
    uncapped = TrainConfig(confidence_cap_quantile=1.0)
    attacked = shilling_sensitivity(train, index, uncapped, fake_user_share=0.05, epochs=10)
    assert attacked["fake_users"] == round(0.05 * index.n_users)
    assert attacked["exposure_clean"] < 0.05, attacked  # an unpopular item is rarely recommended
    assert attacked["exposure_lift"] > 0.3, attacked  # measured ~0.48: 5 % fake users reach half the shop
    assert attacked["exposure_lift"] == pytest.approx(
        attacked["exposure_poisoned"] - attacked["exposure_clean"]
    )
    quiet = shilling_sensitivity(train, index, uncapped, fake_user_share=0.0, epochs=10)
    assert quiet["fake_users"] == 0
    assert abs(quiet["exposure_lift"]) < 0.01, quiet
    assert quiet["exposure_clean"] == attacked["exposure_clean"]


def test_confidence_cap_blunts_the_same_attack(
    split: tuple[pd.DataFrame, pd.DataFrame], index: IdIndex
) -> None:
    """Capping per-row confidence takes away the fake accounts' outsized 'purchase' weight."""
    capped = shilling_sensitivity(split[0], index, TrainConfig(), fake_user_share=0.05, epochs=10)
    assert capped["exposure_lift"] < 0.1, capped


def test_target_exposure_counts_users_whose_top_k_holds_the_item(
    model: MatrixFactorization, index: IdIndex
) -> None:
    users = list(index.users[:50])
    best = {recommend(model, index, user, k=1, exclude=set())[0][0] for user in users}
    for item in best:
        holders = [user for user in users if recommend(model, index, user, k=1, exclude=set())[0][0] == item]
        assert target_exposure(model, index, item, users, k=1) == pytest.approx(len(holders) / len(users))
    assert target_exposure(model, index, index.items[0], users, k=index.n_items) == 1.0
    assert target_exposure(model, index, index.items[0], [], k=10) == 0.0

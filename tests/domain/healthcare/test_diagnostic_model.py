"""The lesion CNN: learns synthetic lesions, deterministic, safe storage, patient-level splits."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter

from domain.healthcare.diagnostic_model import (
    CNNConfig,
    evaluate,
    load_model,
    patient_split,
    save_model,
    train_cnn,
)
from domain.healthcare.lesion_cnn import LesionCNN, build_from_architecture, embed_images, predict_proba
from resources.model_files import CONFIG_FILE, WEIGHTS_FILE

SIZE = 32  # the tests train at 32 px, a quarter of the default 64 px's compute; QUICK runs at 64 px
QUICK = CNNConfig(epochs=1, batch_size=16, seed=3)


def synthetic_scans(
    n: int, *, seed: int, size: int, contrast: tuple[float, float] = (0.15, 0.4)
) -> tuple[np.ndarray, np.ndarray]:
    """`n` grey-level scans ``[n, 1, size, size]`` in [0, 1] and labels (1 = lesion, about half).

    Each scan is a body-like ellipse of varying size, position and brightness
    with smooth tissue texture and pixel noise on a dark background;
    positives also carry a Gaussian blob lesion inside the body, of varied
    size (sigma 1.5-4 px at 64 px, scaled with `size`), `contrast` and position.
    """
    scale = size / 64
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        cy, cx = size / 2 + rng.normal(0, size * 0.03, 2)
        ry, rx = size * rng.uniform(0.32, 0.42, 2)
        body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        texture = gaussian_filter(rng.normal(0, 1, (size, size)), 5.0 * scale) * scale
        image = 0.05 + body * (rng.uniform(0.35, 0.55) + texture)
        if labels[i]:
            radius, angle = np.sqrt(rng.uniform(0, 0.6)), rng.uniform(0, 2 * np.pi)
            ly, lx = cy + radius * ry * np.sin(angle), cx + radius * rx * np.cos(angle)
            sigma = rng.uniform(1.5, 4.0) * scale
            image = image + rng.uniform(*contrast) * np.exp(
                -((yy - ly) ** 2 + (xx - lx) ** 2) / (2 * sigma**2)
            )
        image = image + rng.normal(0, 0.04 * scale, (size, size))  # downsampling averages noise away
        images[i, 0] = np.clip(image, 0, 1)
    return images, labels


@cache
def lesion_data() -> dict[str, np.ndarray]:
    """400 training and 200 held-out scans, shared by the healthcare model tests (read-only)."""
    train_x, train_y = synthetic_scans(400, seed=11, size=SIZE)
    test_x, test_y = synthetic_scans(200, seed=12, size=SIZE)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


@cache
def clean_model() -> tuple[LesionCNN, CNNConfig]:
    """The CNN trained with the default configuration on `lesion_data`, trained once per test session."""
    cfg = CNNConfig(image_size=SIZE, seed=5)
    data = lesion_data()
    return train_cnn(data["train_x"], data["train_y"], cfg), cfg


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    return lesion_data()


@pytest.fixture
def trained() -> tuple[LesionCNN, CNNConfig]:
    return clean_model()


def test_cnn_learns_synthetic_lesions(
    data: dict[str, np.ndarray], trained: tuple[LesionCNN, CNNConfig]
) -> None:
    model, _ = trained
    metrics = evaluate(model, data["test_x"], data["test_y"])
    print(f"held-out metrics: {metrics}")
    assert metrics["n"] == 200
    assert metrics["auc"] > 0.85
    assert metrics["sensitivity"] > 0.7 and metrics["specificity"] > 0.7
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert embed_images(model, data["test_x"][:5]).shape == (5, model.embedding_dim)


def test_training_is_deterministic() -> None:
    images, labels = synthetic_scans(64, seed=13, size=QUICK.image_size)
    first, second = train_cnn(images, labels, QUICK), train_cnn(images, labels, QUICK)
    other = train_cnn(images, labels, replace(QUICK, seed=QUICK.seed + 1))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert any(not torch.equal(t, other.state_dict()[n]) for n, t in first.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda() -> None:
    images, labels = synthetic_scans(64, seed=13, size=QUICK.image_size)
    model = train_cnn(images, labels, replace(QUICK, device="cuda"))
    assert next(model.parameters()).device.type == "cpu"
    assert predict_proba(model, images[:8]).shape == (8,)


def test_save_load_round_trip(
    tmp_path: Path, data: dict[str, np.ndarray], trained: tuple[LesionCNN, CNNConfig]
) -> None:
    model, cfg = trained
    metrics = evaluate(model, data["test_x"], data["test_y"])
    directory = save_model(model, cfg, metrics, tmp_path / "models" / "v1", version=1)
    assert sorted(path.name for path in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert [path.name for path in directory.parent.iterdir()] == ["v1"]  # no staging folder left behind
    loaded, config = load_model(directory)
    assert config["architecture"] == {"name": "lesion_cnn", "image_size": SIZE, "channels": [8, 16, 32]}
    assert CNNConfig.from_dict(config["train_config"]) == cfg
    assert config["version"] == 1 and config["metrics"] == metrics
    np.testing.assert_array_equal(predict_proba(loaded, data["test_x"]), predict_proba(model, data["test_x"]))
    with pytest.raises(FileExistsError):
        save_model(model, cfg, metrics, directory, version=2)


def test_serving_builds_the_network_from_the_config(
    tmp_path: Path, trained: tuple[LesionCNN, CNNConfig]
) -> None:
    model, cfg = trained
    directory = save_model(model, cfg, {}, tmp_path / "m", version=3)
    config = json.loads((directory / CONFIG_FILE).read_text())
    architectures = {"lesion_cnn": build_from_architecture}  # what the secure loader is given
    network = architectures[config["architecture"]["name"]](config["architecture"])
    assert isinstance(network, LesionCNN) and network.channels == (8, 16, 32)


def test_load_refuses_shape_mismatch(tmp_path: Path, trained: tuple[LesionCNN, CNNConfig]) -> None:
    model, cfg = trained
    directory = save_model(model, cfg, {}, tmp_path / "m", version=1)
    wider = LesionCNN(image_size=SIZE, channels=(8, 16, 64))
    (directory / WEIGHTS_FILE).unlink()
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, directory / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_model(directory)

    directory = save_model(model, cfg, {}, tmp_path / "n", version=1)
    config = json.loads((directory / CONFIG_FILE).read_text())
    config["architecture"]["channels"] = [8, 16, 64]
    config["train_config"]["channels"] = [8, 16, 64]
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_model(directory)

    config["train_config"]["channels"] = [8, 16, 32]  # the two halves of the config disagree
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="train_config declares"):
        load_model(directory)


def test_load_refuses_a_pickle_in_place_of_weights(
    tmp_path: Path, trained: tuple[LesionCNN, CNNConfig]
) -> None:
    model, cfg = trained
    directory = save_model(model, cfg, {}, tmp_path / "m", version=1)
    # the opening bytes of a pickle (PROTO 4, then a GLOBAL opcode): never unpickled, only refused
    (directory / WEIGHTS_FILE).write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00cos\nsystem\n")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model(directory)


@pytest.mark.parametrize(
    "arch",
    [
        {"name": "lesion_cnn", "image_size": 64},
        {"name": "other", "image_size": 64, "channels": [8]},
        {"name": "lesion_cnn", "image_size": 64, "channels": [8, 0]},
        {"name": "lesion_cnn", "image_size": 60, "channels": [8, 16, 32]},
        {"name": "lesion_cnn", "image_size": 64, "channels": "8,16"},
        {"name": "lesion_cnn", "image_size": 64, "channels": [8], "code": "import os"},
    ],
)
def test_build_from_architecture_refuses_unknown_shapes(arch: dict) -> None:
    with pytest.raises(ValueError):
        build_from_architecture(arch)


def test_predict_refuses_malformed_images(trained: tuple[LesionCNN, CNNConfig]) -> None:
    model, _ = trained
    good = np.full((2, 1, SIZE, SIZE), 0.5, dtype=np.float32)
    for bad in (
        good[:, 0],
        good[..., : SIZE // 2],
        good * 255,
        np.where(good > 0, np.nan, good),
        good.astype(np.uint8),
    ):
        with pytest.raises(ValueError):
            predict_proba(model, bad)
    with pytest.raises(ValueError, match="both classes"):
        evaluate(model, good, np.array([1, 1]))


def studies(n_patients: int, *, seed: int) -> pd.DataFrame:
    """1-5 studies per patient; about a third of patients have a lesion in some of their studies."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        sick = rng.random() < 0.35
        for study in range(int(rng.integers(1, 6))):
            label = int(sick and rng.random() < 0.7)
            rows.append(
                {
                    "study_uid": f"1.2.826.{patient}.{study}",
                    "patient_pseudonym": f"P{patient:04d}",
                    "label": label,
                }
            )
    return pd.DataFrame(rows)


def test_patient_split_keeps_each_patient_in_one_split() -> None:
    frame = studies(300, seed=1)
    splits = patient_split(frame, seed=4)
    assert sorted(uid for uids in splits.values() for uid in uids) == sorted(frame["study_uid"])
    patient_of = frame.set_index("study_uid")["patient_pseudonym"]
    patients = {name: set(patient_of[uids]) for name, uids in splits.items()}
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    label_of = frame.set_index("study_uid")["label"]
    for name, share in zip(("train", "validation", "test"), (0.7, 0.15, 0.15), strict=True):
        assert abs(len(splits[name]) / len(frame) - share) < 0.03, name
        assert abs(label_of[splits[name]].mean() - frame["label"].mean()) < 0.06, name  # stratified
    shuffled = frame.sample(frac=1.0, random_state=0)
    assert patient_split(shuffled, seed=4) == splits  # independent of row order
    assert patient_split(frame, seed=5) != splits


def test_patient_split_refuses_inconsistent_metadata() -> None:
    frame = studies(20, seed=2)
    twice = pd.concat([frame, frame.iloc[[0]].assign(patient_pseudonym="P9999")])
    with pytest.raises(ValueError, match="more than once"):
        patient_split(twice, seed=0)
    with pytest.raises(ValueError, match="needs columns"):
        patient_split(frame.drop(columns=["label"]), seed=0)
    with pytest.raises(ValueError, match="fractions"):
        patient_split(frame, fractions=(0.5, 0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match="0 or 1"):
        patient_split(frame.assign(label=2), seed=0)

"""ExperimentTracking: MLflow runs, dataset inputs and the registry, with nothing pickled."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from examples.attacks.trojan_payloads import plain_pickle
from resources.tracking import (
    DIGEST_TAG,
    ExperimentTracking,
    PickledArtifactError,
    TrackingError,
)

DIGEST_A = "blake3:" + "0123456789abcdef" * 4  # 71 characters: longer than MLflow's 36
DIGEST_B = "blake3:" + "fedcba9876543210" * 4


def write_safetensors(path: Path, header_len: int | None = None) -> None:
    """A tiny valid safetensors file (one f32 tensor); the JSON header padded to `header_len`."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header = header.ljust(header_len or len(header), b" ")
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors")
    (folder / "config.json").write_text('{"factors": 8}')
    return folder


@pytest.fixture
def tracking(home: Path) -> ExperimentTracking:
    return tracking_in(home)


def tracking_in(home: Path) -> ExperimentTracking:
    """The embedded store under `home`, as the code location places it."""
    return ExperimentTracking(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")


def test_run_records_params_metrics_tags_and_full_dataset_digests(tracking: ExperimentTracking) -> None:
    with tracking.run(
        "train-recommender",
        tags={"dagster.run_id": "abc"},
        code_version="cv-123",
        git_revision="deadbeef",
        torch_version="2.13.0",
    ) as run:
        run.log_params({"factors": 8, "lr": 0.05})
        run.log_metrics({"recall_at_10": 0.31}, step=3)
        run.log_dataset("interactions", DIGEST_A, "store://ecommerce/interactions", 1200)
        run.log_dataset("holdout", DIGEST_B, "store://ecommerce/holdout", 300, context="evaluation")
        run.set_tags({"stage": "modeling"})

    got = tracking.client().get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "train-recommender"
    assert got.data.params == {"factors": "8", "lr": "0.05"}
    assert got.data.metrics == {"recall_at_10": pytest.approx(0.31)}
    history = tracking.client().get_metric_history(run.run_id, "recall_at_10")
    assert [m.step for m in history] == [3]
    tags = got.data.tags
    assert tags["pipeline.code_version"] == "cv-123"
    assert tags["mlflow.source.git.commit"] == "deadbeef"
    assert tags["pipeline.torch_version"] == "2.13.0"
    assert tags["pipeline.python_version"].count(".") == 2
    assert tags["dagster.run_id"] == "abc" and tags["stage"] == "modeling"

    inputs = {item["name"]: item for item in tracking.run_inputs(run.run_id)}
    assert inputs == {
        "interactions": {
            "name": "interactions",
            "digest": DIGEST_A,
            "source": "store://ecommerce/interactions",
            "context": "training",
            "rows": 1200,
        },
        "holdout": {
            "name": "holdout",
            "digest": DIGEST_B,
            "source": "store://ecommerce/holdout",
            "context": "evaluation",
            "rows": 300,
        },
    }
    # MLflow itself keeps only a 36-character prefix; the full digest is in the input tag too.
    raw = {d.dataset.name: d for d in got.inputs.dataset_inputs}
    assert raw["interactions"].dataset.digest == DIGEST_A[:36]
    assert {t.key: t.value for t in raw["interactions"].tags}[DIGEST_TAG] == DIGEST_A


def test_run_that_raises_is_marked_failed(tracking: ExperimentTracking) -> None:
    with pytest.raises(RuntimeError, match="boom"), tracking.run("train", tags={}) as run:
        raise RuntimeError("boom")
    assert tracking.client().get_run(run.run_id).info.status == "FAILED"


def test_dataset_digest_must_fit(tracking: ExperimentTracking) -> None:
    with tracking.run("train", tags={}) as run:
        with pytest.raises(TrackingError):
            run.log_dataset("x", "", "store://x", 1)
        with pytest.raises(TrackingError):
            run.log_dataset("x", "b" * 501, "store://x", 1)


def test_register_plain_directory_twice_and_move_champion(
    tracking: ExperimentTracking, model_dir: Path, home: Path, tmp_path: Path
) -> None:
    with tracking.run("train", tags={}) as run:
        run.log_artifacts(model_dir, "model")

    first = tracking.register(run.run_id, "model", "recommender", tags={"signed_by": "release-key-1"})
    second = tracking.register(run.run_id, "model", "recommender")
    assert (first, second) == (1, 2)

    assert tracking.get_alias("recommender", "champion") is None
    tracking.set_alias("recommender", "champion", first)
    assert tracking.get_alias("recommender", "champion") == 1
    tracking.set_alias("recommender", "champion", second)
    assert tracking.get_alias("recommender", "champion") == 2
    assert tracking.get_alias("no-such-model", "champion") is None

    assert tracking.version_tags("recommender", 1) == {"signed_by": "release-key-1"}
    tracking.set_version_tags("recommender", 2, {"audit": "passed", "holdout_auc": 0.91})
    assert tracking.version_tags("recommender", 2) == {"audit": "passed", "holdout_auc": "0.91"}
    assert tracking.version_run_id("recommender", 2) == run.run_id

    # The version's source is a concrete location inside this store, not a runs:/ URI
    # that would be resolved through MLflow's global tracking URI.
    source = tracking.client().get_model_version("recommender", "2").source
    assert source.startswith("file://") and str(home) in source

    copy = tracking.download_version("recommender", 2, tmp_path / "download")
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model.safetensors"]
    assert (copy / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_register_refuses_a_missing_artifact_path(tracking: ExperimentTracking) -> None:
    with tracking.run("train", tags={}) as run:
        run.log_params({"a": 1})
    with pytest.raises(TrackingError, match="no artifacts"):
        tracking.register(run.run_id, "model", "recommender")


def test_nothing_in_the_store_is_a_pickle(tracking: ExperimentTracking, model_dir: Path) -> None:
    with tracking.run("train", tags={}) as run:
        run.log_artifacts(model_dir, "model")
        run.log_dataset("interactions", DIGEST_A, "store://x", 10)
    tracking.set_alias("recommender", "champion", tracking.register(run.run_id, "model", "recommender"))

    store = tracking.store_dir()
    assert store is not None
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    for path in files:
        assert path.suffix not in {".pkl", ".pickle", ".joblib", ".pt", ".pth"}, path
        assert path.name != "MLmodel", "no MLflow model flavour is involved"
        head = path.read_bytes()[:2]
        assert not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5), f"pickle header in {path}"


def test_log_artifacts_refuses_pickles(tracking: ExperimentTracking, tmp_path: Path) -> None:
    disguised = tmp_path / "disguised"
    disguised.mkdir()
    (disguised / "weights.bin").write_bytes(plain_pickle({"w": [1.0, 2.0]}, protocol=4))
    by_name = tmp_path / "by-name"
    by_name.mkdir()
    (by_name / "model.pkl").write_bytes(b"not even a pickle")
    protocol2 = tmp_path / "protocol2.bin"
    protocol2.write_bytes(plain_pickle(3, protocol=2))

    with tracking.run("train", tags={}) as run:
        for bad in (disguised, by_name, protocol2):
            with pytest.raises(PickledArtifactError):
                run.log_artifacts(bad, "model")
    assert tracking.client().list_artifacts(run.run_id) == []


def test_log_artifacts_refuses_a_torch_zip_checkpoint_whatever_its_name(
    tracking: ExperimentTracking, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors")
    # torch.save writes a zip archive holding data.pkl (a pickle); renamed, it hides neither.
    torch.save(torch.nn.Linear(4, 2).state_dict(), folder / "weights.bin")
    assert (folder / "weights.bin").read_bytes()[:4] == b"PK\x03\x04"

    with tracking.run("train", tags={}) as run:
        with pytest.raises(PickledArtifactError, match=r"weights\.bin \(it is a torch\.save zip checkpoint"):
            run.log_artifacts(folder, "model")
        with pytest.raises(PickledArtifactError, match="data.pkl"):
            run.log_artifacts(folder / "weights.bin", "model")
    assert tracking.client().list_artifacts(run.run_id) == []


def test_pickle_guard_lets_lookalike_headers_through(tracking: ExperimentTracking, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    # A safetensors header of 640 bytes starts with 80 02 00 ..., like pickle's PROTO 2.
    write_safetensors(folder / "model.safetensors", header_len=640)
    assert (folder / "model.safetensors").read_bytes()[:2] == b"\x80\x02"
    # Ciphertext may start with 0x80 too; it does not parse as a pickle stream.
    (folder / "model.enc").write_bytes(b"\x80\x03\x00\x01" + bytes(range(256)) * 4)
    with tracking.run("train", tags={}) as run:
        run.log_artifacts(folder, "model")
    names = sorted(f.path for f in tracking.client().list_artifacts(run.run_id, "model"))
    assert names == ["model/model.enc", "model/model.safetensors"]


def test_two_pipelines_in_one_process_do_not_see_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A global MLflow tracking URI (as a stray `mlflow.set_tracking_uri` or the
    # environment would set) must not be where our runs go.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'global.db'}")
    monkeypatch.chdir(tmp_path)

    first = tracking_in(tmp_path / "a")
    with first.run("train-a", tags={}) as run_a:
        run_a.log_dataset("data", DIGEST_A, "store://a", 1)
    first_id = first.experiment_id()

    second = tracking_in(tmp_path / "b")
    with second.run("train-b", tags={}) as run_b:
        run_b.log_dataset("data", DIGEST_B, "store://b", 2)
    second_id = second.experiment_id()
    assert second.store_dir() == tmp_path / "b" / "mlflow"

    seen_b = second.client().search_runs([second_id])
    assert [r.info.run_id for r in seen_b] == [run_b.run_id]
    with pytest.raises(Exception, match=run_a.run_id):
        second.run_inputs(run_a.run_id)

    seen_a = first.client().search_runs([first_id])
    assert [r.info.run_id for r in seen_a] == [run_a.run_id]
    assert first.run_inputs(run_a.run_id)[0]["digest"] == DIGEST_A

    assert not (tmp_path / "global.db").exists()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_explicit_uri_is_where_runs_go(tmp_path: Path, home: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    tracking = ExperimentTracking(tracking_uri=uri, experiment="other")
    with tracking.run("train", tags={}) as run:
        run.log_params({"a": 1})
    assert tracking.resolved_registry_uri() == uri
    assert run.artifact_uri.startswith((tmp_path / "elsewhere" / "artifacts").as_uri())
    assert not (home / "mlflow").exists()

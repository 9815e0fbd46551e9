"""Shared test model for the serving tests.

A tiny `torch.nn.Linear` model, its architecture builder, and a worker handler
(`tests.serving:TinyHandler`) that the worker subprocess imports by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from cryptography.hazmat.primitives.asymmetric import ec

from resources.signing import sign_model
from serving.access import AccessPolicy, ApiKeyClient, ApiKeys, hash_api_key, new_api_key

ARCHITECTURE = "tiny-linear"


class TinyNet(torch.nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def build_tiny(params: dict) -> torch.nn.Module:
    return TinyNet(int(params["in_features"]), int(params["out_features"]))


ARCHITECTURES = {ARCHITECTURE: build_tiny}


class TinyHandler:
    """The worker handler: `predict` runs the linear layer on `inputs`."""

    architectures = ARCHITECTURES
    methods = ("predict", "describe")

    def predict(self, model: Any, params: dict[str, Any]) -> dict[str, Any]:
        x = torch.tensor(params["inputs"], dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != model.config["architecture"]["in_features"]:
            raise ValueError(
                f"inputs must be a list of rows of {model.config['architecture']['in_features']}"
            )
        return {"outputs": model.module(x).tolist(), "version": model.version}

    def describe(self, model: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {"k": int(params.get("k", 0)), "user_id": params.get("user_id"), "version": model.version}


def tiny_weights(seed: int = 0, in_features: int = 3, out_features: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(out_features, in_features, generator=generator),
        "linear.bias": torch.randn(out_features, generator=generator),
    }


def write_model(
    model_dir: Path,
    key: ec.EllipticCurvePrivateKey | None,
    *,
    version: int = 1,
    seed: int = 0,
    extra_config: dict | None = None,
) -> Path:
    """A model directory (weights, config, and a signature when `key` is given)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tiny_weights(seed), str(model_dir / "model.safetensors"))
    config = {
        "architecture": {"name": ARCHITECTURE, "in_features": 3, "out_features": 2},
        "version": version,
        **(extra_config or {}),
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    if key is not None:
        sign_model(model_dir, key)
    return model_dir


def expected_outputs(inputs: list[list[float]], seed: int = 0) -> list[list[float]]:
    weights = tiny_weights(seed)
    x = torch.tensor(inputs)
    return (x @ weights["linear.weight"].T + weights["linear.bias"]).tolist()


def api_key_access(
    scopes: tuple[str, ...] = ("predict", "recommend", "diagnose", "admin"),
    client_id: str = "tests",
    rate_per_minute: int = 100_000,
) -> tuple[AccessPolicy, dict[str, str]]:
    """An access policy with one API-key client, and the headers that client sends."""
    key = new_api_key()
    client = ApiKeyClient(client_id, hash_api_key(key), frozenset(scopes), rate_per_minute)
    return AccessPolicy(api_keys=ApiKeys([client])), {"Authorization": f"Bearer {key}"}

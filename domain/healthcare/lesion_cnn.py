"""The lesion classifier's architecture and inference: what a server needs next to the weights.

A small CNN (`LesionCNN`) rebuilt from a JSON architecture record by
`build_from_architecture`, never deserialised; `predict_proba` and
`embed_images` refuse arrays of the wrong shape, non-finite values or values
outside [0, 1] instead of scoring them. Training, metrics and the patient
split live in `domain.healthcare.diagnostic_model`; this module stays free of
them so the isolated inference worker imports only torch and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

MODEL_NAME = "lesion_cnn"
EVAL_BATCH_SIZE = 256
RANGE_TOLERANCE = 1e-6  # float32 rounding of [0, 1]-normalised pixels


def check_shape(image_size: Any, channels: Any) -> None:
    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not positive_int(image_size) or not channels or not all(positive_int(c) for c in channels):
        raise ValueError(
            f"image_size and channels must be positive integers, got {image_size!r} and {channels!r}"
        )
    if image_size % 2 ** len(channels) != 0:
        raise ValueError(
            f"image_size {image_size} must be divisible by 2**{len(channels)} (one 2x pooling per block)"
        )


class LesionCNN(nn.Module):
    """Conv blocks (3x3 conv, batch norm, ReLU, 2x max pool), global average+max pooling, one linear layer.

    Max pooling over the whole feature map answers "is there a lesion
    anywhere", average pooling carries the image's overall appearance; their
    concatenation (``2 * channels[-1]`` values) is the embedding.
    """

    def __init__(self, image_size: int = 64, channels: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        channels = tuple(channels)
        check_shape(image_size, channels)
        self.image_size = image_size
        self.channels = channels
        blocks: list[nn.Module] = []
        previous = 1
        for width in channels:
            blocks += [
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(2 * previous, 1)

    @property
    def embedding_dim(self) -> int:
        return 2 * self.channels[-1]

    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default initialisation, drawn from `generator` only."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.weight[0].numel())
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
                module.reset_running_stats()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape ``[n, embedding_dim]``."""
        maps = self.features(x)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion logits, shape ``[n]``."""
        return self.head(self.embed(x)).squeeze(-1)

    def architecture(self) -> dict[str, Any]:
        """What `build_from_architecture` needs to rebuild this network from code."""
        return {"name": MODEL_NAME, "image_size": self.image_size, "channels": list(self.channels)}


def build_from_architecture(arch: dict[str, Any]) -> LesionCNN:
    """An untrained network shaped as `arch` declares.

    The architecture is a small JSON record interpreted by this code; the
    network is never deserialised from a stored object, so a model file cannot
    bring its own code.
    """
    expected = {"name", "image_size", "channels"}
    if set(arch) != expected:
        raise ValueError(f"architecture must have exactly the keys {sorted(expected)}, got {sorted(arch)}")
    if arch["name"] != MODEL_NAME:
        raise ValueError(f"unknown architecture {arch['name']!r}; expected {MODEL_NAME!r}")
    if not isinstance(arch["channels"], list | tuple):
        raise ValueError(f"architecture channels must be a list of integers, got {arch['channels']!r}")
    check_shape(arch["image_size"], tuple(arch["channels"]))
    return LesionCNN(image_size=arch["image_size"], channels=tuple(arch["channels"]))


def check_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """`images` as contiguous writeable float32 ``[n, 1, size, size]`` in [0, 1], or ValueError saying why."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (1, image_size, image_size):
        raise ValueError(f"images must have shape [n, 1, {image_size}, {image_size}], got {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be floating point normalised to [0, 1], got dtype {images.dtype}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    if not images.flags.writeable:  # torch.from_numpy needs a writeable buffer; never write to the caller's
        images = images.copy()
    if images.size and not np.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    if images.size and (images.min() < -RANGE_TOLERANCE or images.max() > 1 + RANGE_TOLERANCE):
        raise ValueError(f"images must be normalised to [0, 1], found [{images.min()}, {images.max()}]")
    return images


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameterless module)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def _batched(
    function: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    outputs = [
        function(torch.from_numpy(images[start : start + batch_size]).to(device)).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(outputs).numpy() if outputs else np.zeros((0,), dtype=np.float32)


def predict_logits(model: LesionCNN, images: np.ndarray, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Lesion logits ``[n]`` in eval mode, `batch_size` images at a time, wherever the model lives."""
    images = check_images(images, model.image_size)
    model.eval()
    return _batched(model, images, batch_size, model_device(model))


def predict_proba(model: LesionCNN, images: np.ndarray, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Lesion probabilities ``[n]`` (float64)."""
    logits = predict_logits(model, images, batch_size).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-logits))


def embed_images(model: LesionCNN, images: np.ndarray, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Penultimate activations ``[n, embedding_dim]`` in eval mode."""
    images = check_images(images, model.image_size)
    model.eval()
    out = _batched(model.embed, images, batch_size, model_device(model))
    return out.reshape(len(images), model.embedding_dim)

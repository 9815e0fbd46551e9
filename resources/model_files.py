"""Model directories on disk: safetensors weights plus a JSON config, nothing pickled.

Every example's model code saves and loads through these two functions, so
the safety properties hold in one place: the directory appears atomically
and only once; the network is built from code from the config's
architecture; weights come from safetensors only and must match that
architecture tensor for tensor.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_model_dir(model: nn.Module, config: dict[str, Any], directory: Path) -> Path:
    """Write `model.safetensors` (the state dict) and `config.json` into a new `directory`.

    Both files are written and fsynced in a temporary sibling folder that is
    renamed into place in one step, so a killed run never leaves a
    half-written model that a later run could trust. A model directory is
    written once: an existing non-empty `directory` is refused.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(
            f"model directory {directory} already holds files; a model version is written once"
        )
    payload = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(payload, encoding="utf-8")
        for path in (staging / WEIGHTS_FILE, staging / CONFIG_FILE, staging):
            _fsync(path)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync(directory.parent)
    return directory


def load_model_dir(
    directory: Path,
    build: Callable[[dict[str, Any]], nn.Module],
    required: set[str],
    check: Callable[[nn.Module, dict[str, Any]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model (built by `build` from the config's architecture) and config stored in `directory`.

    Protects against unsafe deserialisation: the weights come from a
    safetensors file only (never pickle or `torch.load`), so a pickle payload
    in place of the weights is refused unread; tensors whose names, shapes or
    dtypes differ from the architecture are refused with ValueError rather
    than loaded partially. Verifying who produced the directory (its
    signature) is the caller's job. `check(model, config)` may refuse
    example-specific inconsistencies before any weights are read.
    """
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    missing = ({"architecture", "version"} | required) - set(config)
    if missing:
        raise ValueError(f"{CONFIG_FILE} lacks {sorted(missing)}")
    model = build(config["architecture"])
    if check:
        check(model, config)
    try:
        tensors = load_file(directory / WEIGHTS_FILE)
    except SafetensorError as error:
        raise ValueError(f"{WEIGHTS_FILE} is not a valid safetensors file: {error}") from error
    expected = {name: (tuple(tensor.shape), str(tensor.dtype)) for name, tensor in model.state_dict().items()}
    found = {name: (tuple(tensor.shape), str(tensor.dtype)) for name, tensor in tensors.items()}
    if found != expected:
        raise ValueError(
            f"{WEIGHTS_FILE} does not match the architecture in {CONFIG_FILE}: "
            f"expected tensors {expected}, found {found}"
        )
    model.load_state_dict(tensors, strict=True)
    return model.eval(), config

"""Cost of the integrity controls, as ratios against in-memory BLAKE3 on the same bytes.

    make bench            # 256 MiB
    SIZE_MB=1024 make bench

Prints, for one payload: in-memory BLAKE3 (the baseline), the store's
verified read (decrypt + both digests), the store's encrypted write, the
audit's re-hash of bytes at rest, and model-signing verification of a
model directory holding the payload as its weights. Ratios are
throughputs relative to the baseline measured in the same run.
"""

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from resources.keys import LocalKeyProvider
from resources.signing import sign_model, verify_model
from resources.store import ArtifactStore

REPEATS = 3


def best_of(fn: Callable[[], object]) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    size = int(os.environ.get("SIZE_MB", "256")) * 1024 * 1024
    payload = os.urandom(size)
    with tempfile.TemporaryDirectory() as home:
        keys = LocalKeyProvider(folder=f"{home}/keys")
        store = ArtifactStore(key_provider=keys, root=f"{home}/store")
        artifact = store.stage("modeling").write_bytes("modeling/bench/payload.bin", payload)
        model_dir = Path(home) / "model"
        model_dir.mkdir()
        (model_dir / "model.safetensors").write_bytes(payload)
        (model_dir / "config.json").write_text('{"architecture": {"name": "bench"}, "version": 1}')
        release_key = keys.ec_signing_key("release")
        sign_model(model_dir, release_key)

        baseline = best_of(lambda: blake3.blake3(payload, max_threads=blake3.blake3.AUTO).digest())
        rows = {
            "in-memory BLAKE3 (baseline)": baseline,
            "store: verified read (decrypt + 2 digests)": best_of(
                lambda: store.read_verified(
                    artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest
                )
            ),
            "store: encrypted atomic write": best_of(
                lambda: store.stage("modeling").write_bytes("modeling/bench/again.bin", payload)
            ),
            "audit: re-hash bytes at rest": best_of(lambda: store.stored_digest(artifact.path)),
            "model-signing: verify directory": best_of(
                lambda: verify_model(model_dir, [release_key.public_key()])
            ),
        }
    print(f"{size / 2**20:.0f} MiB, best of {REPEATS}")
    print(f"{'operation':<46} {'seconds':>8} {'GB/s':>7} {'vs baseline':>12}")
    for name, seconds in rows.items():
        print(f"{name:<46} {seconds:8.3f} {size / seconds / 1e9:7.2f} {baseline / seconds:11.2f}x")


if __name__ == "__main__":
    main()

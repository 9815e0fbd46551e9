"""The store at disk speed: encrypted write and verified read against plain file I/O and BLAKE3.

    make bench                                # 64 MiB and 1 GiB
    STORE_SIZES_MIB=64 python -m benchmarks.store

For each size, measured in the same run on the same random payload (best of
three), with the store and the raw files in one temporary folder:
- raw file write: the payload written with the store's atomic protocol
  (temporary file, fsync, rename, fsync of the folder), without encryption or digests;
- raw file read: a file written just before read back into memory (the
  page cache cannot be dropped without root, so this is a warm read; the
  store's read below is warm in the same way);
- in-memory BLAKE3, multi-threaded, as `resources.digests` hashes files;
- the store's encrypted atomic write (encryption, plaintext and stored digests, atomic publish);
- the store's verified read (decryption, both digests checked against the ledger's).
Prints throughputs and their ratios to the baselines, and writes them to the
"store" section of `reports/bench.json` (the largest size at the top level).
"""

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.report import write_section
from resources.atomic import atomic_write_bytes
from resources.digests import digest_bytes
from resources.keys import LocalKeyProvider
from resources.segmented_aead import SEGMENT_SIZE
from resources.store import ArtifactStore

REPEATS = 3
MIB = 1 << 20


def best_gbps(size: int, operation: Callable[[], object]) -> float:
    """Throughput of the fastest of REPEATS runs, in GB/s."""
    fastest = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        operation()
        fastest = min(fastest, time.perf_counter() - started)
    return size / fastest / 1e9


def measure(size: int, folder: Path) -> dict[str, float]:
    payload = os.urandom(size)
    keys = LocalKeyProvider(folder=str(folder / "keys"))
    store = ArtifactStore(key_provider=keys, root=str(folder / "store"))
    stage = store.stage("modeling")
    raw, stored = folder / "raw" / "payload.bin", "modeling/bench/payload.bin"
    gbps = {
        "blake3_gbps": best_gbps(size, lambda: digest_bytes(payload)),  # multi-threaded BLAKE3
        "raw_write_gbps": best_gbps(size, lambda: atomic_write_bytes(raw, payload)),
        "raw_read_gbps": best_gbps(size, raw.read_bytes),
        "encrypted_write_gbps": best_gbps(size, lambda: stage.write_bytes(stored, payload)),
    }
    artifact = stage.write_bytes(stored, payload)
    digests = {"digest": artifact.digest, "stored_digest": artifact.stored_digest}
    gbps["verified_read_gbps"] = best_gbps(size, lambda: store.read_verified(stored, **digests))
    return {
        "size_mib": size // MIB,
        **{name: round(value, 3) for name, value in gbps.items()},
        "verified_read_vs_blake3": round(gbps["verified_read_gbps"] / gbps["blake3_gbps"], 3),
        "verified_read_vs_raw_read": round(gbps["verified_read_gbps"] / gbps["raw_read_gbps"], 3),
        "encrypted_write_vs_blake3": round(gbps["encrypted_write_gbps"] / gbps["blake3_gbps"], 3),
        "encrypted_write_vs_raw_write": round(gbps["encrypted_write_gbps"] / gbps["raw_write_gbps"], 3),
    }


def print_table(results: list[dict[str, float]]) -> None:
    print(f"store, best of {REPEATS}, {SEGMENT_SIZE // MIB} MiB segments; ratios to baselines of this run")
    print(f"{'size':>9} {'operation':<24} {'GB/s':>6} {'vs raw file':>12} {'vs BLAKE3':>10}")
    for r in results:
        rows = [
            ("in-memory BLAKE3", r["blake3_gbps"], None, 1.0),
            ("raw file write", r["raw_write_gbps"], 1.0, r["raw_write_gbps"] / r["blake3_gbps"]),
            ("raw file read (warm)", r["raw_read_gbps"], 1.0, r["raw_read_gbps"] / r["blake3_gbps"]),
            ("encrypted write", r["encrypted_write_gbps"], r["encrypted_write_vs_raw_write"],
             r["encrypted_write_vs_blake3"]),
            ("verified read", r["verified_read_gbps"], r["verified_read_vs_raw_read"],
             r["verified_read_vs_blake3"]),
        ]  # fmt: skip
        for name, gbps, vs_raw, vs_blake3 in rows:
            raw_column = f"{vs_raw:11.2f}x" if vs_raw is not None else f"{'':>12}"
            print(f"{r['size_mib']:>5} MiB {name:<24} {gbps:6.2f} {raw_column} {vs_blake3:9.2f}x")


def main() -> None:
    sizes = [int(mib) * MIB for mib in os.environ.get("STORE_SIZES_MIB", "64,1024").split(",")]
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
            results.append(measure(size, Path(folder)))
    print_table(results)
    largest = max(results, key=lambda r: r["size_mib"])
    settings = {"segment_mib": SEGMENT_SIZE // MIB, "repeats": REPEATS}
    write_section("store", {**largest, **settings, "sizes": results})


if __name__ == "__main__":
    main()

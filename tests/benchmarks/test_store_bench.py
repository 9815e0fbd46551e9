"""`make bench`'s store benchmark in its reduced CI form: it runs, and its report keeps the stable schema.

Timing is not asserted (ratios on a shared CI machine say nothing); the schema and the
throughputs' consistency are, so the report that versions are compared with cannot silently break.
"""

import json

import pytest

from benchmarks import report, store


def test_the_store_benchmark_writes_its_section_and_keeps_the_others(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"integrity": {"kept": 1}}))
    monkeypatch.setattr(report, "BENCH_REPORT", bench)
    monkeypatch.setenv("STORE_SIZES_MIB", "1,4")
    monkeypatch.setattr(store, "REPEATS", 1)

    store.main()

    written = json.loads(bench.read_text())
    assert written["integrity"] == {"kept": 1}
    section = written["store"]
    assert section["size_mib"] == 4 and [r["size_mib"] for r in section["sizes"]] == [1, 4]
    for field in ("verified_read_gbps", "encrypted_write_gbps", "verified_read_vs_blake3"):
        assert section[field] > 0, field
    ratio = section["verified_read_gbps"] / section["blake3_gbps"]  # both rounded to 3 places in the report
    assert section["verified_read_vs_blake3"] == pytest.approx(ratio, rel=0.05, abs=0.002)
    assert "verified read" in capsys.readouterr().out

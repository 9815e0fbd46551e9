"""`make bench`'s serving benchmark in its reduced CI form: every server answers every request, and the
report keeps the stable schema.

Latency is not asserted (on a shared CI machine it says nothing); errors, the schema and the
ratios' consistency with the figures they come from are.
"""

import json

import pytest

from benchmarks import report, serving


def test_the_serving_benchmark_loads_every_server_without_errors(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"store": {"kept": 1}}))
    monkeypatch.setattr(report, "BENCH_REPORT", bench)
    monkeypatch.setenv("SERVING_REQUESTS", "16")

    serving.main()

    written = json.loads(bench.read_text())
    assert written["store"] == {"kept": 1}
    section = written["serving"]
    assert section["errors_64_clients"] == 0 and section["workers"] == max(serving.POOLS)
    assert set(section["clients"]) == {str(n) for n in serving.CLIENTS}
    pools = [f"workers_{n}" for n in serving.POOLS]
    for row in section["clients"].values():
        assert set(row) == {"in_process", *pools}
        for path, figures in row.items():
            assert figures["errors"] == 0, (path, row)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"], (path, row)
        for pool in pools:
            ratio = row[pool]["p99_ms"] / row["in_process"]["p99_ms"]
            assert row[pool]["p99_ratio_vs_in_process"] == pytest.approx(ratio, rel=0.01)
    eight = section["clients"]["8"][pools[-1]]
    assert section["p99_ratio_vs_in_process_8_clients"] == eight["p99_ratio_vs_in_process"]
    assert "workers_2" in capsys.readouterr().out

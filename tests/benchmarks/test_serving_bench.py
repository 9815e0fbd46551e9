"""`make bench`'s serving benchmark in its reduced CI form: both servers answer every request, and the
report keeps the stable schema.

Latency is not asserted (on a shared CI machine it says nothing); errors, the schema and the
ratios' consistency with the figures they come from are.
"""

import json

import pytest

from benchmarks import report, serving


def test_the_serving_benchmark_loads_both_servers_without_errors(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"store": {"kept": 1}}))
    monkeypatch.setattr(report, "BENCH_REPORT", bench)
    monkeypatch.setenv("SERVING_REQUESTS", "16")

    serving.main()

    written = json.loads(bench.read_text())
    assert written["store"] == {"kept": 1}
    section = written["serving"]
    assert section["errors_64_clients"] == 0 and section["workers"] == 1
    assert set(section["clients"]) == {str(n) for n in serving.CLIENTS}
    for row in section["clients"].values():
        for path in ("in_process", "worker"):
            assert row[path]["errors"] == 0, (path, row)
            assert 0 < row[path]["p50_ms"] <= row[path]["p99_ms"], (path, row)
        assert row["p99_ratio_vs_in_process"] == pytest.approx(
            row["worker"]["p99_ms"] / row["in_process"]["p99_ms"], rel=0.01
        )
    assert section["p99_ratio_vs_in_process_8_clients"] == section["clients"]["8"]["p99_ratio_vs_in_process"]
    assert "worker" in capsys.readouterr().out

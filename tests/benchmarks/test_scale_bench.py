"""`make bench`'s scale benchmark in its reduced CI form: two tiny shops collected and processed with
every control on, each size in processes of its own, and the stable schema of its report (no timing
is judged here; `make bench` runs 100k, 1M and 10M events)."""

import json

import pytest

from benchmarks import report, scale


@pytest.mark.slow
def test_the_scale_benchmark_measures_each_size_in_its_own_processes(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"store": {"kept": 1}}))
    monkeypatch.setattr(report, "BENCH_REPORT", bench)
    monkeypatch.setenv("SCALE_EVENTS", "6000,3000")

    scale.main()

    written = json.loads(bench.read_text())
    assert written["store"] == {"kept": 1}
    section = written["scale"]
    assert section["events"] == [3000, 6000]
    assert {"time_ratio_per_10x", "peak_rss_ratio_per_10x"} <= section.keys()
    for row in section["rows"]:
        assert row["complete"] and row["failed_checks"] == {}, row["failed_checks"]
        assert row["collection_processing_s"] > 0 and row["baseline_s"] > 0
        assert row["python_peak_rss_mib"] > 100, "the orchestrating process's peak was not read"
        assert row["spark_jvm_peak_rss_mib"] > 100, "the Spark driver JVM's peak was not read"
    assert section["time_ratio_per_10x"] == section["steps"][0]["time_ratio_per_10x"] > 0
    assert "3,000 -> 6,000, per 10x" in capsys.readouterr().out


def test_a_size_that_false_alarms_is_reported_and_left_out_of_the_ratios():
    rows = [
        {"events": n, "complete": n != 100, "total_s": n / 10, "python_peak_rss_mib": 500.0}
        | {"spark_jvm_peak_rss_mib": 400.0, "failed_checks": {}}
        for n in (10, 100, 1000)
    ]
    summary = scale.summarise(rows)
    assert [(s["from"], s["to"]) for s in summary["steps"]] == [(10, 1000)]
    assert summary["time_ratio_per_10x"] == pytest.approx(10.0)


def test_ratios_per_10x_are_scaled_from_any_two_sizes():
    a = {"events": 1_000, "t": 2.0}
    assert scale.per_10x(a, {"events": 10_000, "t": 21.0}, "t") == pytest.approx(10.5)
    assert scale.per_10x(a, {"events": 100_000, "t": 200.0}, "t") == pytest.approx(10.0)


def test_a_bad_size_list_says_what_to_set(monkeypatch):
    monkeypatch.setenv("SCALE_EVENTS", "1e6")
    with pytest.raises(SystemExit, match="event counts separated by commas"):
        scale.sizes_from_env()

"""`make bench`'s cost-of-controls benchmark in its reduced CI form (the e-commerce lifecycle only):
the controlled run has its checks and encrypted store, the other has neither, and the report keeps
the stable schema. No timing is judged here."""

import json

import pytest

from benchmarks import controls, report


@pytest.mark.slow
def test_the_controls_benchmark_compares_a_controlled_lifecycle_with_one_without(
    tmp_path, monkeypatch, capsys
):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"store": {"kept": 1}}))
    monkeypatch.setattr(report, "BENCH_REPORT", bench)
    monkeypatch.setenv("CONTROLS_EXAMPLES", "ecommerce")
    monkeypatch.setenv("CONTROLS_REPEATS", "1")
    stores = []
    real_plain_resources = controls.plain_resources

    def recording(instance):
        resources = real_plain_resources(instance)
        stores.append((instance.defs.resources["store"], resources["store"]))
        return resources

    monkeypatch.setattr(controls, "plain_resources", recording)

    controls.main()

    written = json.loads(bench.read_text())
    assert written["store"] == {"kept": 1}
    section = written["controls_overhead"]
    assert section["total"] > 0 and set(section["per_stage"]) >= {"collection", "processing", "modeling"}
    shop = section["examples"]["ecommerce"]
    assert shop["on_s"] > 0 and shop["off_s"] > 0 and shop["repeats"] == 1
    # The controlled run's separate check steps ran, and the uncontrolled run had none of them.
    assert shop["costliest_check_steps_s"], "no check step ran in the controlled lifecycle"
    stages = shop["per_stage"].values()
    assert all(0 <= t["check_steps_s"] <= t["on_s"] for t in stages)
    assert sum(t["check_steps_s"] for t in stages) > 0
    [(controlled, plain)] = stores
    assert controlled.encrypt and not plain.encrypt
    assert "total:" in capsys.readouterr().out


def test_an_unknown_example_says_which_exist(monkeypatch):
    monkeypatch.setenv("CONTROLS_EXAMPLES", "ecommerce,retail")
    with pytest.raises(SystemExit, match=r"\['retail'\]; choose from ecommerce, healthcare"):
        controls.main()


def test_repeated_runs_count_each_step_at_its_fastest():
    first = {"load": ("collection", 3.0), "train": ("modeling", 9.0)}
    second = {"load": ("collection", 4.5), "train": ("modeling", 2.0), "score": ("processing", 1.0)}

    assert controls.fastest([first, second]) == {
        "load": ("collection", 3.0),
        "train": ("modeling", 2.0),
        "score": ("processing", 1.0),
    }


def test_a_repeat_count_below_one_is_refused(monkeypatch):
    monkeypatch.setenv("CONTROLS_REPEATS", "0")
    with pytest.raises(SystemExit, match="CONTROLS_REPEATS is 0"):
        controls.main()

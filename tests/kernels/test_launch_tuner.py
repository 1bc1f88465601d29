"""LaunchTuner: the choice logic, driven by launches whose cost is known (CPU sleeps)."""
from __future__ import annotations

import time

import torch

from edgecmg.kernels._common import LaunchTuner, shape_bucket


def _launcher(costs: dict, calls: list):
    def launch(cfg):
        calls.append(cfg["name"])
        time.sleep(costs[cfg["name"]])
    return launch


def test_fastest_candidate_wins_and_is_reused(monkeypatch):
    monkeypatch.setenv("EDGECMG_AUTOTUNE", "1")
    tuner = LaunchTuner(repeats=2)
    candidates = [{"name": "slow"}, {"name": "fast"}, {"name": "medium"}]
    calls: list = []
    launch = _launcher({"slow": 0.02, "fast": 0.001, "medium": 0.01}, calls)
    cpu = torch.device("cpu")
    assert tuner.choose(("case", 64), candidates, launch, cpu)["name"] == "fast"
    assert calls.count("slow") == calls.count("fast") == calls.count("medium") == 3  # warm-up + 2 timed
    calls.clear()
    assert tuner.choose(("case", 64), candidates, launch, cpu)["name"] == "fast"
    assert calls == []  # cached: no more timing for this key
    assert tuner.last["name"] == "fast"
    seconds = tuner.timings[("case", 64)]
    assert seconds[1] < seconds[2] < seconds[0]


def test_tuning_off_takes_the_first_candidate_without_running_any(monkeypatch):
    monkeypatch.setenv("EDGECMG_AUTOTUNE", "0")
    tuner = LaunchTuner()
    calls: list = []
    cfg = tuner.choose(("case",), [{"name": "a"}, {"name": "b"}], _launcher({"a": 0, "b": 0}, calls),
                       torch.device("cpu"))
    assert cfg["name"] == "a" and calls == [] and tuner.chosen == {}


def test_single_candidate_is_never_timed(monkeypatch):
    monkeypatch.setenv("EDGECMG_AUTOTUNE", "1")
    calls: list = []
    cfg = LaunchTuner().choose(("case",), [{"name": "only"}], _launcher({"only": 0}, calls), torch.device("cpu"))
    assert cfg["name"] == "only" and calls == []


def test_shape_buckets_are_powers_of_two():
    assert [shape_bucket(x) for x in (0, 1, 2, 3, 1000, 1024, 1025)] == [1, 1, 2, 4, 1024, 1024, 2048]


def test_threads_asking_for_the_same_key_tune_it_once(monkeypatch):
    import threading

    monkeypatch.setenv("EDGECMG_AUTOTUNE", "1")
    tuner = LaunchTuner(repeats=2)
    candidates = [{"name": "a"}, {"name": "b"}]
    calls: list = []
    launch = _launcher({"a": 0.01, "b": 0.002}, calls)
    picks: list = []
    threads = [threading.Thread(target=lambda: picks.append(tuner.choose(("case",), candidates, launch,
                                                                         torch.device("cpu"))["name"]))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert picks == ["b"] * 4
    assert len(calls) == 6  # one tuning: 2 candidates x (warm-up + 2 timed), not one per thread


def test_autotune_switch_reads_the_usual_on_and_off_words(monkeypatch):
    from edgecmg.kernels._common import autotune_enabled

    for word, on in (("1", True), ("true", True), ("on", True), ("YES", True), ("y", True),
                     ("0", False), ("false", False), ("off", False), ("no", False), ("N", False)):
        monkeypatch.setenv("EDGECMG_AUTOTUNE", word)
        assert autotune_enabled() is on, word


def test_split_evenly_launches_at_least_one_and_at_most_one_split_per_item():
    from edgecmg.kernels._common import split_evenly

    assert split_evenly(100, 0, 128) == (1, 100)    # no split asked for: one
    assert split_evenly(5, 8, 1) == (5, 1)          # more splits than items: one item each
    splits, per_split = split_evenly(1000, 3, 128)
    assert splits * per_split >= 1000 and (splits - 1) * per_split < 1000

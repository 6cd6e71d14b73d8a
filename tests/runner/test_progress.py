"""Progress read from real tqdm output and from the explicit progress line."""

from __future__ import annotations

import io

from tqdm import tqdm

from trainflow.runner.progress import parse_bar, parse_marker


def _frames(**options) -> list[str]:
    out = io.StringIO()
    for _ in tqdm(file=out, mininterval=0, **options):
        pass
    return [frame for frame in out.getvalue().replace("\n", "").split("\r") if frame]


def test_a_tqdm_bar_with_a_total() -> None:
    frames = _frames(iterable=range(200), desc="epoch 3")
    first, last = parse_bar(frames[0]), parse_bar(frames[-1])
    assert first == {"current": 0, "total": 200, "desc": "epoch 3"}
    assert last is not None
    assert (last["current"], last["total"], last["desc"]) == (200, 200, "epoch 3")
    assert last["rate"] > 0
    assert last["eta_s"] == 0
    currents = [parse_bar(frame)["current"] for frame in frames]  # type: ignore[index]
    assert currents == sorted(currents)


def test_a_tqdm_counter_without_a_total() -> None:
    last = parse_bar(_frames(iterable=iter(range(5000)), unit="batch")[-1])
    assert last is not None
    assert last["current"] == 5000
    assert "total" not in last


def test_scaled_units_and_slow_iterations() -> None:
    assert parse_bar("  5%|▌         | 1.50M/30.0M [00:03<00:57, 500kB/s]") == {
        "current": 1_500_000,
        "total": 30_000_000,
        "rate": 500_000,
        "eta_s": 57,
    }
    slow = parse_bar("train: 40%|████      | 2/5 [00:08<00:12, 4.00s/it]")
    assert slow == {"current": 2, "total": 5, "rate": 0.25, "eta_s": 12, "desc": "train"}


def test_text_that_is_not_a_bar() -> None:
    for text in ("loss 0.25 [epoch 3]", "Downloading...", "", "50%", "[00:01<00:02, 3it/s]"):
        assert parse_bar(text) is None, text


def test_the_explicit_progress_line() -> None:
    assert parse_marker('trainflow:progress {"current": 3, "total": 10, "desc": "epochs"}') == {
        "current": 3,
        "total": 10,
        "desc": "epochs",
    }
    assert parse_marker('trainflow:progress {"current": 0.5, "eta_s": 12.5, "rate": 2}') == {
        "current": 0.5,
        "rate": 2,
        "eta_s": 12.5,
    }
    assert parse_marker('trainflow:progress {"total": 10}') is None  # current is required
    assert parse_marker('trainflow:progress {"current": "many"}') is None
    assert parse_marker("trainflow:progress not json") is None
    assert parse_marker('print("trainflow:progress")') is None

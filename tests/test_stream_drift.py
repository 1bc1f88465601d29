"""A running stream says when most recent frames are flagged (a line drifting since fit: KolektorSDD
30% brighter flagged 78% of its good parts, and a service said nothing until it was stopped), and its
status line counts the frames flagged."""
import logging

import pytest

from edgecmg.cli import main
from edgecmg.commands.stream import RECENT_FRAMES, RunTally
from edgecmg.detector import Detector


@pytest.fixture(scope="module")
def detector(small_artifact):
    with Detector.load(small_artifact, backend="torch") as det:
        yield det


def test_most_recent_frames_flagged_is_said_once_and_again_after_a_recovery(detector, caplog):
    tally = RunTally(detector, None)
    said = "frames were flagged at threshold"
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        for _ in range(RECENT_FRAMES - 1):
            tally.count(False)
        for _ in range(RECENT_FRAMES // 2):  # half flagged, not most: nothing said
            tally.count(True)
        assert said not in caplog.text
        tally.count(True)  # now most of the last RECENT_FRAMES
        assert caplog.text.count(said) == 1
        assert f"{RECENT_FRAMES // 2 + 1} of the last {RECENT_FRAMES} frames" in caplog.text
        assert "fit again on good frames taken now (edgecmg capture)" in caplog.text
        for _ in range(RECENT_FRAMES):  # still mostly flagged, then hovering around half: said once
            tally.count(True)
        for _ in range(RECENT_FRAMES // 2 + 10):
            tally.count(False)
        assert caplog.text.count(said) == 1
        for _ in range(RECENT_FRAMES):  # recovered (none flagged) ...
            tally.count(False)
        for _ in range(RECENT_FRAMES // 2 + 1):  # ... and drifting again: said again
            tally.count(True)
        assert caplog.text.count(said) == 2
    assert tally.anomalies == 2 * (RECENT_FRAMES // 2 + 1) + RECENT_FRAMES


def test_the_status_line_counts_the_frames_flagged(small_artifact, kolektor_root, tmp_path, capsys):
    import os

    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:2]:
        os.symlink(path, frames / path.name)
    assert main(["stream", str(frames), "-m", str(small_artifact), "--backend", "torch", "--threshold=-1000"]) == 0
    status = capsys.readouterr().err
    assert "| flagged 1" in status or "| flagged 2" in status, status


def test_the_stretch_warning_is_said_once_per_aspect_not_per_frame_size(small_artifact, kolektor_root, caplog):
    """A folder of photos turned 90 degrees, each a few pixels apart in size, said it 23 times in 139 images."""
    import cv2

    from edgecmg.imageio import read_image

    part = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    turned = cv2.rotate(part, cv2.ROTATE_90_CLOCKWISE)  # wide where the training images are tall
    with Detector.load(small_artifact, backend="torch") as det, caplog.at_level(logging.WARNING, logger="edgecmg"):
        for extra in range(5):  # five sizes of the same aspect, as a camera's crops vary
            det.prepare(cv2.resize(turned, (640 + 4 * extra, 256 + 2 * extra)))
        det.prepare(cv2.resize(turned, (640, 320)))  # another aspect: said for it too
    said = [r.getMessage() for r in caplog.records if "stretches the part" in r.getMessage()]
    assert len(said) == 2, said
    assert "a 256x640 frame" in said[0] and "a 320x640 frame" in said[1]


def test_two_runs_appending_to_one_log_are_told_apart_by_their_id(small_artifact, kolektor_root, tmp_path):
    """Two starts within a second (or a Jetson without a clock battery, booting to the same time before
    NTP sets it) shared run_started: their records could not be told apart."""
    import json
    import os

    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:2]:
        os.symlink(path, frames / path.name)
    log = tmp_path / "frames.jsonl"
    for _ in range(2):
        assert main(["-q", "stream", str(frames), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                     str(log)]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    ids = [r["run_id"] for r in records]
    assert len(set(ids)) == 2 and ids[0] == ids[1] and ids[2] == ids[3]
    (row,) = json.loads((tmp_path / "stream_summary.json").read_text())["rows"]
    assert row["run_id"] == ids[2] and row["ended_at"] >= row["started"]


def test_two_streams_given_one_jsonl_at_once_are_refused(tmp_path):
    """Two streams appending to one --jsonl interleaved their records, and one's summary row was lost."""
    from edgecmg.commands.stream import open_appending
    from edgecmg.errors import ConfigError

    log = tmp_path / "frames.jsonl"
    with open_appending(str(log)) as first:
        first.write({"frame_index": 0})
        with pytest.raises(ConfigError, match=r"--jsonl .*frames.jsonl: another run is writing its records into this "
                                              r"file now; give each stream a --jsonl of its own"):
            open_appending(str(log))
    with open_appending(str(log)) as again:  # let go when the first run closed it
        again.write({"frame_index": 1})
    assert log.read_text().count("\n") == 2


def test_streams_ending_together_keep_each_their_summary_row(tmp_path):
    """Streams stopped at the same moment (a box shutting down) each read the rows, and the last to write
    dropped the others'. Four processes update one summary at once, each its own row."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from edgecmg.commands import held_while_updating
        from edgecmg.commands.stream import summary_rows
        from edgecmg.stream.report import write_report
        folder, name = Path(sys.argv[1]), sys.argv[2]
        with held_while_updating(folder):
            rows = summary_rows(folder / "stream_summary.json", {"records": name, "model_sha256": "m"})
            time.sleep(0.3)  # the window in which another run read the same rows
            write_report(rows, folder, "stream_summary")
    """)
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"line{i}.jsonl"], cwd=tmp_path)
            for i in range(4)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0, 0, 0]
    rows = json.loads((tmp_path / "stream_summary.json").read_text())["rows"]
    assert sorted(row["records"] for row in rows) == [f"line{i}.jsonl" for i in range(4)]


def test_a_stream_judged_by_another_model_keeps_its_own_summary_row(tmp_path):
    """Two parts judged on one camera, one after the other: the second model's row replaced the first's."""
    from edgecmg.commands.stream import summary_rows
    from edgecmg.stream.report import write_report

    path = tmp_path / "stream_summary.json"
    first = {"records": "/l/frames.jsonl", "model_sha256": "aaa", "frames_yielded": 3}
    write_report(summary_rows(path, first), tmp_path, "stream_summary")
    second = {"records": "/l/frames.jsonl", "model_sha256": "bbb", "frames_yielded": 5}
    write_report(summary_rows(path, second), tmp_path, "stream_summary")
    restarted = {"records": "/l/frames.jsonl", "model_sha256": "aaa", "frames_yielded": 7}
    rows = summary_rows(path, restarted)  # the first model again: its own row replaced
    assert [(r["model_sha256"], r["frames_yielded"]) for r in rows] == [("bbb", 5), ("aaa", 7)]

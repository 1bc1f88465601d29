"""examples/inspect_line.py on a real model and real images: it rejects exactly the frames the
detector flags, saves their overlays, and stops where it is told to."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inspect_line_rejects_what_the_detector_flags(small_artifact, kolektor_root, tmp_path, capsys):
    from edgecmg.detector import Detector
    from edgecmg.imageio import read_image

    line = tmp_path / "line"
    line.mkdir()
    parts = (sorted((kolektor_root / "test" / "defect").iterdir())[:4]
             + sorted((kolektor_root / "test" / "good").iterdir())[:4])
    for i, path in enumerate(parts):  # a folder is judged in name order: frame i is parts[i]
        (line / f"{i:02d}{path.suffix}").symlink_to(path)
    detector = Detector.load(small_artifact, backend="torch")
    flagged = [i for i, path in enumerate(parts) if detector.predict(read_image(path)).is_anomaly]
    assert 0 < len(flagged) < len(parts)  # both verdicts occur, so the comparison means something

    inspect_line = _load_example("inspect_line")
    rejects = tmp_path / "rejects"
    assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch", "--rejects", str(rejects)]) == 0
    out = capsys.readouterr().out
    assert [int(i) for i in re.findall(r"REJECT frame (\d+) ", out)] == flagged
    # a folder's frames are named by their file: the operator finds the part
    assert [name for name in re.findall(r"REJECT frame \d+ \((.+?)\):", out)] == [str(line / f"{i:02d}{parts[i].suffix}")
                                                                              for i in flagged]
    names = sorted(p.name for p in rejects.iterdir())
    assert [re.sub(r"^\d{8}-\d{6}_", "", name) for name in names] == [f"frame{i:06d}.png" for i in flagged]
    assert f"{len(parts)} frames judged, {len(flagged)} rejected, 0 dropped as stale" in out
    assert re.search(r"latency capture -> verdict: p50 [\d.]+ ms", out)

    assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch", "--max-frames", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 frames judged" in out and [int(i) for i in re.findall(r"REJECT frame (\d+) ", out)] == [
        i for i in flagged if i < 3]
    # a threshold above every score rejects nothing
    assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch", "--threshold", "1e6"]) == 0
    assert f"{len(parts)} frames judged, 0 rejected" in capsys.readouterr().out
    # what cannot be used is an error line, exit 2, no traceback
    empty = tmp_path / "empty"
    empty.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv, expected in (([str(small_artifact), str(empty)], "inspect_line: error:"),
                           ([str(small_artifact), str(line), "--threshold", "nan"], "threshold"),
                           ([str(small_artifact), str(line), "--rejects", str(blocker)], "a-file is a file")):
        assert inspect_line.main([*argv, "--backend", "torch"]) == 2
        captured = capsys.readouterr()
        assert expected in captured.err
        assert "REJECT" not in captured.out  # refused before the first frame, not at the first reject
    assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch", "--threshold", "0"]) == 0
    assert f"{len(parts)} frames judged" in capsys.readouterr().out  # reject() divided by the threshold
    with pytest.raises(SystemExit) as exit_info:  # a negative count is a mistake, not "no limit"
        inspect_line.main([str(small_artifact), str(line), "--max-frames", "-1"])
    assert exit_info.value.code == 2 and "--max-frames -1" in capsys.readouterr().err


def test_inspect_line_stopped_as_a_service_prints_its_report(small_artifact, kolektor_root, tmp_path):
    """systemctl stop and docker stop send SIGTERM: the loop ends as with Ctrl-C and prints the shift
    report (it died at once, with no report, and as a container's PID 1 ignored SIGTERM)."""
    import signal
    import subprocess
    import sys
    import time

    import cv2

    from edgecmg.imageio import read_image

    frame = cv2.cvtColor(read_image(sorted((kolektor_root / "test" / "good").iterdir())[0]), cv2.COLOR_RGB2BGR)
    video_path = tmp_path / "line.avi"
    video = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (frame.shape[1], frame.shape[0]))
    for _ in range(3000):  # far more than are judged before the signal
        video.write(frame)
    video.release()
    # threshold 0: every frame is a reject, so its printed line says when the loop runs (a fixed sleep
    # after the start-up line could end before the first frame on a loaded machine)
    process = subprocess.Popen([sys.executable, str(EXAMPLES / "inspect_line.py"), str(small_artifact),
                                str(video_path), "--backend", "torch", "--threshold", "0"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in process.stdout:  # the detector's lines, then the first reject
        if line.startswith("REJECT frame"):
            break
    else:
        raise AssertionError(process.stderr.read())
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped (Ctrl-C or a stop signal)" in out and re.search(r"\d+ frames judged", out), out


def test_make_demo_runs_end_to_end_on_a_part_of_elpv(tmp_path, monkeypatch, capsys):
    """examples/demo_elpv.py (`make demo`) on 40 training and 24 test cells of the real elpv data:
    it fits, evaluates, prints its metrics and leaves the files the README lists."""
    import json

    from edgecmg.datasets import elpv_dataset

    demo = _load_example("demo_elpv")
    train, test = elpv_dataset("mono", seed=0)
    small_test = [s for s in test if s.label == 1][:12] + [s for s in test if s.label == 0][:12]
    monkeypatch.setattr(demo, "elpv_dataset", lambda kind, seed: (train[:40], small_test))
    monkeypatch.chdir(tmp_path)
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "demo_out" / "metrics.json").read_text())
    assert f"image AUROC {metrics['image_auroc']:.4f}" in out and metrics["images"] == 24
    for name in ("elpv_mono.edgecmg", "scores.csv", "scores.png", "hardest.png"):
        assert (tmp_path / "demo_out" / name).stat().st_size > 0, name


def test_make_demo_answers_help_and_refuses_an_unwritable_folder_before_fitting(tmp_path, monkeypatch, capsys):
    """--help prints the usage and fits nothing; an --out that cannot be written is one error line,
    before the minutes of fitting (elpv_dataset is never reached)."""
    demo = _load_example("demo_elpv")
    monkeypatch.setattr(demo, "elpv_dataset", lambda kind, seed: pytest.fail("the demo started fitting"))
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0 and "--out" in capsys.readouterr().out
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert demo.main(["--out", str(blocker / "sub")]) == 2
    assert "demo_elpv: error:" in capsys.readouterr().err


def _judging_line(kolektor_root, tmp_path, frames: int) -> Path:
    """A folder of ``frames`` links to one good part: a line that keeps inspect_line judging."""
    line = tmp_path / "line"
    line.mkdir()
    part = sorted((kolektor_root / "test" / "good").iterdir())[0]
    for i in range(frames):
        (line / f"{i:04d}{part.suffix}").symlink_to(part)
    return line


def _signal_once_judging(rejects: Path, number: int):
    """Sends ``number`` to this process once the first reject is saved (the loop is running). Returns
    a function to call when the test is over, before its handlers are put back: it stops the sender
    and waits for it, so that no signal arrives under pytest's own handlers (SIGHUP would end the run)."""
    import os
    import threading
    import time

    over = threading.Event()

    def send():
        deadline = time.monotonic() + 60
        while not any(rejects.glob("*.png")) and time.monotonic() < deadline and not over.is_set():
            time.sleep(0.01)
        if not over.is_set():
            os.kill(os.getpid(), number)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()

    def stop() -> None:
        over.set()
        sender.join()

    return stop


def test_inspect_line_stops_on_sighup_and_puts_back_the_handlers_it_found(small_artifact, kolektor_root, tmp_path,
                                                                          capsys):
    """A closed terminal (SIGHUP) ends the run as SIGTERM does, with the report; main() called from a
    program leaves that program's own SIGTERM and SIGHUP handlers in place afterwards."""
    import signal

    seen = []

    def mine(signum, frame):
        seen.append(signum)

    line = _judging_line(kolektor_root, tmp_path, 300)
    rejects = tmp_path / "rejects"
    previous = {number: signal.signal(number, mine) for number in (signal.SIGTERM, signal.SIGHUP)}
    stop_sender = _signal_once_judging(rejects, signal.SIGHUP)
    try:
        inspect_line = _load_example("inspect_line")
        assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch", "--threshold", "0",
                                  "--rejects", str(rejects), "--max-frames", "300"]) == 0
        out = capsys.readouterr().out
        assert "stopped (Ctrl-C or a stop signal)" in out and seen == []
        assert int(re.search(r"(\d+) frames judged", out)[1]) < 300
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGHUP) is mine
    finally:
        stop_sender()
        for number, handler in previous.items():
            signal.signal(number, handler)


def test_inspect_line_under_nohup_is_not_stopped_by_sighup(small_artifact, kolektor_root, tmp_path, capsys):
    """nohup ignores SIGHUP so that a run outlives its terminal: inspect_line leaves it ignored."""
    import signal

    line = _judging_line(kolektor_root, tmp_path, 12)
    rejects = tmp_path / "rejects"
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stop_sender = _signal_once_judging(rejects, signal.SIGHUP)
    try:
        inspect_line = _load_example("inspect_line")
        assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch", "--threshold", "0",
                                  "--rejects", str(rejects)]) == 0
        out = capsys.readouterr().out
        assert "stopped" not in out and "12 frames judged" in out
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        stop_sender()
        signal.signal(signal.SIGHUP, previous)


def test_inspect_line_stopped_while_starting_says_so_and_exits_130(small_artifact, kolektor_root, tmp_path, capsys):
    """A stop signal before the first frame (the model loading, the camera opening) is exit status
    130 and a line that says when it came, not a run that looks finished."""
    import os
    import signal
    import threading
    import time

    def mine(signum, frame):
        pass

    over = threading.Event()

    def stop_once_installed():  # inspect_line's handler is in place: main() is loading the model
        deadline = time.monotonic() + 60
        while signal.getsignal(signal.SIGTERM) is mine and time.monotonic() < deadline and not over.is_set():
            time.sleep(0.001)
        if not over.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    line = _judging_line(kolektor_root, tmp_path, 3)
    previous = signal.signal(signal.SIGTERM, mine)
    sender = threading.Thread(target=stop_once_installed, daemon=True)
    try:
        sender.start()
        inspect_line = _load_example("inspect_line")
        assert inspect_line.main([str(small_artifact), str(line), "--backend", "torch"]) == 130
    finally:
        over.set()
        sender.join()  # no SIGTERM may arrive after pytest's own handler is back
        signal.signal(signal.SIGTERM, previous)
    assert "stopped (Ctrl-C or a stop signal) while starting or closing the stream" in capsys.readouterr().err


def test_inspect_line_reports_what_it_judged_before_a_lost_cameras_error(small_artifact, kolektor_root, capsys,
                                                                         monkeypatch):
    """A camera lost beyond its reconnects went straight to the error line: no shift report, when an
    operator needs it most."""
    from edgecmg.detector import Detector
    from edgecmg.errors import StreamError
    from edgecmg.imageio import read_image

    inspect_line = _load_example("inspect_line")
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])

    def camera():  # a live camera that delivers three frames, then is lost for good
        yield from (frame.copy() for _ in range(3))
        raise StreamError("camera 0 failed and could not be reopened after 2 attempt(s)")

    real_stream = Detector.stream
    monkeypatch.setattr(Detector, "stream", lambda self, source, **kw: real_stream(self, camera(), live=True, **kw))
    assert inspect_line.main([str(small_artifact), "0", "--backend", "torch", "--threshold", "1e6"]) == 2
    captured = capsys.readouterr()
    judged = re.search(r"(\d+) frames judged, 0 rejected, (\d+) dropped as stale", captured.out)
    assert judged and int(judged[1]) >= 1 and int(judged[1]) + int(judged[2]) == 3, captured.out  # live: "latest"
    assert "(of it the model: p50" in captured.out
    assert "a recording or folder is read ahead" not in captured.out  # live: no queue caveat
    assert captured.err.startswith("inspect_line: error: ") and "could not be reopened" in captured.err

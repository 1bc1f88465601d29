"""The README's Python examples run as printed (on a small real data folder), so they cannot drift
from the API."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_run(kolektor_train, kolektor_root, tmp_path, monkeypatch, capsys):
    import cv2

    from edgecmg.imageio import read_image

    blocks = _python_blocks()
    assert len(blocks) == 2 and "fit(" in blocks[0] and "Detector.load" in blocks[1]
    # What the examples name: DATA and calib_images/ (10 good parts), frame.png and line3.mp4.
    for folder in ("DATA", "calib_images"):
        (tmp_path / folder).mkdir()
        for path in kolektor_train[:10]:
            (tmp_path / folder / path.name).symlink_to(path)
    test_images = sorted((kolektor_root / "test" / "defect").iterdir())[:4]
    frames = [read_image(path) for path in test_images]
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    height, width = frames[0].shape[:2]
    video = cv2.VideoWriter(str(tmp_path / "line3.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for frame in frames:
        video.write(cv2.cvtColor(cv2.resize(frame, (width, height)), cv2.COLOR_RGB2BGR))
    video.release()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))

    exec(compile(blocks[0], "README.md (fit, export, calibrate)", "exec"), {})
    assert (tmp_path / "part.edgecmg").is_file()  # the bank and heads; the backbone ships with the package
    for name in ("part.full.onnx", "part.int8.onnx"):  # these carry the backbone's weights
        assert (tmp_path / name).stat().st_size > 1 << 20, name

    namespace: dict = {}
    exec(compile(blocks[1], "README.md (Detector)", "exec"), namespace)
    score, is_anomaly, total_ms = capsys.readouterr().out.split()
    assert np.isfinite(float(score)) and is_anomaly in ("True", "False") and float(total_ms) > 0
    assert namespace["overlay"].shape == frames[0].shape and namespace["overlay"].dtype == np.uint8
    assert namespace["frames"].stats.frames_yielded == len(frames)  # the stream judged the whole video
    assert namespace["r"].frame_index == len(frames) - 1

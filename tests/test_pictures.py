"""The pictures as users look at them: the overlay's label keeps its verdict on a small frame (a 40-pixel
frame showed "12.38" of "12.385 ANOMALY", which read as a part that passed) and says the threshold; one
very wide image no longer pads every cell of a contact sheet (hardest.png was 25,616 pixels wide); a
saved stream's frames of another shape are fitted in, not stretched."""
import cv2
import numpy as np
import pytest

from edgecmg.commands.stream import letterboxed
from edgecmg.result import Result, Timings
from edgecmg.visualize import MAX_CELL_ASPECT, contact_sheet, overlay_heatmap


def _result(score, threshold=3.08, size=(40, 40)):
    return Result(score=score, threshold=threshold, anomaly_map=np.zeros(size, np.float32),
                  kept_mask=np.ones((2, 2), bool), timings=Timings(0.0, 0.0, 0.0), frame_index=0, timestamp=0.0,
                  frame=np.full((*size, 3), 128, np.uint8))


def test_the_label_says_the_verdict_first_and_the_threshold():
    assert _result(5.8141).label == "ANOMALY 5.8141 (threshold 3.08)"
    assert _result(1.96).label == "ok 1.96 (threshold 3.08)"
    # a score a hair either side of the threshold never reads as on its other side
    assert _result(12.385, threshold=12.38).label == "ANOMALY 12.385 (threshold 12.38)"
    assert _result(3.082, threshold=3.084).label == "ok 3.082 (threshold 3.084)"
    assert _result(9.9961, threshold=9.9962).label == "ok 9.9961 (threshold 9.9962)"


def test_on_a_small_frame_the_label_keeps_its_verdict_and_drops_what_does_not_fit(monkeypatch):
    from edgecmg import visualize

    drawn = []
    real_put_text = cv2.putText

    def put_text(image, text, origin, font, font_scale, *args, **kwargs):
        drawn.append((text, font_scale))
        return real_put_text(image, text, origin, font, font_scale, *args, **kwargs)

    monkeypatch.setattr(visualize.cv2, "putText", put_text)
    label = "ANOMALY 12.385 (threshold 3.08)"
    for width, kept in ((40, "ANOMALY"), (120, "ANOMALY 12.385"), (200, label), (400, label)):
        drawn.clear()
        overlay_heatmap(np.full((60, width, 3), 128, np.uint8), np.zeros((60, width), np.float32), 3.08, label=label)
        assert [text for text, _ in drawn] == [kept], (width, drawn)  # never half of "(threshold 3.08)"
        (text, font_scale), = drawn
        assert cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] + 6 <= width  # all of it shows


def test_one_very_wide_image_does_not_widen_every_cell_of_a_sheet():
    parts = [np.full((256, 100, 3), 200, np.uint8) for _ in range(3)]
    strip = np.full((100, 2000, 3), 60, np.uint8)  # 2000x100: 5,120 pixels wide at the cell height
    sheet = contact_sheet([*parts, strip], ["a", "b", "c", "strip"], columns=4, cell_height=256)
    assert sheet.shape[1] <= 4 * (MAX_CELL_ASPECT * 256 + 4)
    # the strip is scaled to the widest cell, its proportions kept
    cell = sheet[:, -(MAX_CELL_ASPECT * 256 + 2):-2]
    rows = np.flatnonzero((cell == 60).all(axis=2).any(axis=1))
    assert abs(len(rows) - round(100 * MAX_CELL_ASPECT * 256 / 2000)) <= 1


def test_a_saved_stream_fits_frames_of_another_shape_in_without_stretching_them():
    portrait = np.full((300, 100, 3), 255, np.uint8)
    out = letterboxed(portrait, (400, 200))  # (width, height), as the video's first frame set it
    assert out.shape == (200, 400, 3)
    ys, xs = np.nonzero(out[..., 0])
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) in ((200, 67), (200, 66))  # 3:1 kept
    assert xs.min() > 150  # centred
    tiny = letterboxed(np.full((40, 40, 3), 255, np.uint8), (400, 200))  # blown up to fit, square kept
    ys, xs = np.nonzero(tiny[..., 0])
    assert ys.max() - ys.min() + 1 == xs.max() - xs.min() + 1 == 200
    assert cv2.countNonZero(tiny[..., 0]) == 200 * 200


@pytest.mark.parametrize("realtime", [False, True])
def test_a_saved_stream_of_image_files_plays_at_the_pace_it_ran(small_artifact, kolektor_root, tmp_path, realtime):
    """Written at 25 frames a second, a folder of 12 parts played as a half-second flash: 2 a second now;
    with --realtime (30 a second without --capture-fps), at that pace (it was written at 2)."""
    import os

    from edgecmg.cli import main
    from edgecmg.commands.stream import STILLS_FPS
    from edgecmg.stream.sources import DEFAULT_PACE_FPS

    folder = tmp_path / "parts"
    folder.mkdir()
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:3]:
        os.symlink(path, folder / path.name)
    video = tmp_path / "parts.avi"
    assert main(["-q", "stream", str(folder), "-m", str(small_artifact), "--backend", "torch", "--save",
                 str(video)] + (["--realtime"] if realtime else [])) == 0
    check = cv2.VideoCapture(str(video))
    try:
        fps, frames = check.get(cv2.CAP_PROP_FPS), check.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        check.release()
    assert fps == (DEFAULT_PACE_FPS if realtime else STILLS_FPS) and frames == 3
    assert (STILLS_FPS, DEFAULT_PACE_FPS) == (2.0, 30.0)

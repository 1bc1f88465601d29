"""Heat-map overlay and PNG writing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecmg.errors import ConfigError, DataError
from edgecmg.imageio import read_image
from edgecmg.visualize import contact_sheet, overlay_heatmap, save_png, score_histogram


def _frame(h=48, w=64):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_shape_dtype_and_input_untouched():
    frame = _frame()
    before = frame.copy()
    out = overlay_heatmap(frame, np.zeros((48, 64), np.float32), threshold=1.0)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(frame, before)


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1)])
def test_gray_frame(shape):
    gray = np.full(shape, 100, np.uint8)
    out = overlay_heatmap(gray, np.ones((48, 64)), threshold=1.0)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("map_shape", [(12, 16), (100, 30), (1, 48, 64)])
def test_map_size_mismatch_is_resized(map_shape):
    out = overlay_heatmap(_frame(), np.random.default_rng(1).random(map_shape), threshold=0.5)
    assert out.shape == (48, 64, 3)


def test_colour_scale_is_anchored_at_the_threshold():
    black = np.zeros((20, 30, 3), np.uint8)
    m = np.zeros((20, 30), np.float32)
    m[:, 10:20] = 1.0  # exactly the threshold -> middle of JET (green-ish)
    m[:, 20:] = 5.0  # >= 2x threshold -> red end
    out = overlay_heatmap(black, m, threshold=1.0, alpha=1.0, contour=False)
    low, mid, high = out[10, 5].astype(int), out[10, 15].astype(int), out[10, 25].astype(int)
    assert low[2] > low[0] and low[2] > low[1]  # blue
    assert mid[1] > mid[0] and mid[1] > mid[2]  # green
    assert high[0] > high[1] and high[0] > high[2]  # red, i.e. RGB not BGR
    # the same map value gives the same colour whatever the rest of the frame holds
    out2 = overlay_heatmap(black, np.where(m == 5.0, 50.0, m), threshold=1.0, alpha=1.0, contour=False)
    np.testing.assert_array_equal(out2[10, 15], out[10, 15])


def test_a_threshold_at_or_below_zero_draws_the_map_against_its_own_maximum():
    """Detector accepts threshold=0 (every part flagged): its overlays draw the hottest value red."""
    black = np.zeros((20, 30, 3), np.uint8)
    m = np.zeros((20, 30), np.float32)
    m[:, 10:20], m[:, 20:] = 1.5, 3.0
    for threshold in (0.0, -2.0):
        out = overlay_heatmap(black, m, threshold=threshold, alpha=1.0, contour=False)
        np.testing.assert_array_equal(out, overlay_heatmap(black, m, threshold=1.5, alpha=1.0, contour=False))


def test_alpha_zero_keeps_the_frame_and_contour_marks_the_region():
    frame = np.full((40, 40, 3), 30, np.uint8)
    m = np.zeros((40, 40), np.float32)
    m[10:30, 10:30] = 2.0
    np.testing.assert_array_equal(overlay_heatmap(frame, m, 1.0, alpha=0.0, contour=False), frame)
    with_contour = overlay_heatmap(frame, m, 1.0, alpha=0.0, contour=True)
    assert (with_contour[10, 10:30] == 255).all()  # white outline on the region border
    assert (with_contour[20, 20] == 30).all()  # inside untouched
    # a map exactly at the threshold is flagged (score >= threshold), so its region is outlined too
    m[10:30, 10:30] = 1.0
    assert (overlay_heatmap(frame, m, 1.0, alpha=0.0, contour=True)[10, 10:30] == 255).all()


def test_label_is_drawn_in_the_corner():
    frame = np.full((60, 160, 3), 120, np.uint8)
    m = np.zeros((60, 160), np.float32)
    plain = overlay_heatmap(frame, m, 1.0, alpha=0.0)
    labelled = overlay_heatmap(frame, m, 1.0, alpha=0.0, label="score 0.73 ✓")
    diff = np.any(plain != labelled, axis=2)
    assert diff[:30, :80].any() and not diff[40:, 100:].any()


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"threshold": float("inf")}, ConfigError, "threshold"),
        ({"threshold": float("nan")}, ConfigError, "threshold"),
        ({"threshold": 1.0, "alpha": 1.5}, ConfigError, "alpha"),
        ({"threshold": 1.0, "frame": np.zeros((4, 4, 3), np.float32)}, DataError, "uint8"),
        ({"threshold": 1.0, "frame": np.zeros((4, 4, 5), np.uint8)}, DataError, "shape"),
        ({"threshold": 1.0, "anomaly_map": np.zeros((2, 4, 4))}, DataError, "2-D"),
    ],
)
def test_overlay_errors(kwargs, err, match):
    args = {"frame": np.zeros((4, 4, 3), np.uint8), "anomaly_map": np.zeros((4, 4))}
    args.update(kwargs)
    with pytest.raises(err, match=match):
        overlay_heatmap(**args)


def test_nan_in_map_does_not_crash():
    m = np.full((8, 8), np.nan, np.float32)
    assert overlay_heatmap(np.zeros((8, 8, 3), np.uint8), m, 1.0).shape == (8, 8, 3)


def test_non_finite_and_negative_values_take_the_ends_of_the_scale():
    black = np.zeros((1, 6, 3), np.uint8)
    m = np.array([[-3.0, 0.0, np.nan, -np.inf, 7.0, np.inf]], np.float32)
    out = overlay_heatmap(black, m, threshold=1.0, alpha=1.0, contour=False).astype(int)
    zero, top = out[0, 1], out[0, 4]
    for i in (0, 2, 3):  # below zero, NaN and -inf: the bottom of the scale, like 0
        np.testing.assert_array_equal(out[0, i], zero)
    np.testing.assert_array_equal(out[0, 5], top)  # +inf: the top, like any value >= 2x threshold
    assert top[0] > top[2] and zero[2] > zero[0]  # red end, blue end


def test_save_png_roundtrip(tmp_path):
    rgb = _frame(9, 7)
    p = save_png(tmp_path / "new" / "dir" / "vis ü.png", rgb)
    np.testing.assert_array_equal(read_image(p), rgb)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(read_image(save_png(tmp_path / "g.png", gray))[:, :, 1], gray)
    with pytest.raises(DataError, match="uint8"):
        save_png(tmp_path / "f.png", rgb.astype(np.float32))
    with pytest.raises(DataError, match="shape"):
        save_png(tmp_path / "f.png", np.zeros((2, 2, 5), np.uint8))


def test_contact_sheet_tiles_images_of_different_shapes_with_captions():
    tall = np.full((200, 80, 3), 200, np.uint8)
    wide = np.full((50, 100, 3), 90, np.uint8)
    sheet = contact_sheet([tall, wide, tall], ["a", "b", "c"], columns=2, cell_height=100)
    # cells: 100 px + 22 caption + 2x2 border; width of the widest scaled image (wide: 200) + 4
    assert sheet.dtype == np.uint8 and sheet.shape == (2 * 126, 2 * 204, 3)
    assert (sheet[30:120, 2:42] == 200).all()  # the tall image, scaled to 40x100, below its caption
    assert (sheet[30:120, 206:406] == 90).all()  # the wide one scaled to 200x100, second column
    assert (sheet[126 + 30:, 204:] == 40).all()  # the empty cell of the last row is background
    assert sheet[:22, :204].max() > 200  # caption text (anti-aliased: OpenCV 4.11 peaks at 240 for "a")


@pytest.mark.parametrize("kwargs, match", [({"images": []}, "at least one"),
                                           ({"columns": 0}, "columns"),
                                           ({"captions": ["only one"]}, "captions for 2 images")])
def test_contact_sheet_errors(kwargs, match):
    args = {"images": [np.zeros((8, 8, 3), np.uint8)] * 2, **kwargs}
    with pytest.raises(ConfigError, match=match):
        contact_sheet(**args)


def test_score_histogram_draws_the_threshold_and_refuses_no_scores():
    from edgecmg.visualize import score_histogram

    good, defective = [0.1, 0.2, 0.5, 1.0], [0.9, 1.0, 2.0, float("nan")]
    picture = score_histogram(good, defective, threshold=1.0, title="parts")
    assert picture.shape == (420, 900, 3) and picture.dtype == np.uint8
    # the threshold line is drawn in its own colour; a threshold outside every score widens the axis
    assert (picture == np.array([213, 94, 0], np.uint8)).all(axis=2).any()
    threshold_rgb = np.array([213, 94, 0], np.uint8)
    for threshold in (2.0, 0.0):  # above or below every score, near them: the axis takes it in, and its line shows
        picture = score_histogram([1.0, 1.0], [1.5], threshold=threshold)
        assert picture.shape == (420, 900, 3)
        line = (picture[100:300, 60:880] == threshold_rgb).all(axis=2)  # inside the plot, below the legend
        assert line.any(axis=0).sum() >= 2 and line.all(axis=0).any(), threshold
    for threshold, side in ((5.0, slice(600, 880)), (-3.0, slice(60, 340))):  # far off: a mark at that edge
        picture = score_histogram([1.0, 1.0], [1.5], threshold=threshold)
        line = (picture[100:300, 60:880] == threshold_rgb).all(axis=2)
        assert not line.all(axis=0).any(), threshold  # no line across the plot
        band = picture[60:80].astype(int)  # the mark's text is antialiased: its colour, not its exact value
        mark = (band[..., 0] > 180) & (band[..., 1] < 140) & (band[..., 2] < 80)
        assert mark[:, side].any() and not np.delete(mark, np.arange(900)[side], axis=1).any(), threshold
    with pytest.raises(DataError, match="no finite score"):
        score_histogram([float("nan")], [], threshold=0.0)


def test_score_histogram_bars_never_hold_parts_on_both_sides_of_the_threshold():
    """Bin edges fall on the threshold: a bar at the line mixed passed and flagged parts."""
    from edgecmg import visualize

    edges_used = []
    real_histogram = visualize.np.histogram

    def histogram(values, edges):
        edges_used.append(np.asarray(edges))
        return real_histogram(values, edges)

    rng = np.random.default_rng(0)
    good, defective = rng.normal(2.0, 1.0, 400), rng.normal(6.0, 2.0, 100)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(visualize.np, "histogram", histogram)
        score_histogram(good, defective, threshold=3.7312)
    edges = edges_used[0]
    assert np.isclose(edges, 3.7312, rtol=0, atol=1e-9).any()
    long_title = score_histogram(good, defective, threshold=3.7312, title="KolektorSDD " + "x" * 150)
    assert (long_title[5:40, 892:] == 255).all()  # cut in its middle, not off the picture's edge
    assert edges[0] <= min(good.min(), defective.min()) and edges[-1] >= max(good.max(), defective.max())


def test_an_anomaly_map_with_leading_batch_and_channel_axes_is_accepted():
    """A [1, 1, H, W] map (a batch of one, one channel: what a model returns) draws as its H x W map."""
    frame = np.full((32, 48, 3), 90, np.uint8)
    m = np.zeros((32, 48), np.float32)
    m[8:20, 10:30] = 3.0
    want = overlay_heatmap(frame, m, threshold=1.0)
    assert np.array_equal(overlay_heatmap(frame, m[None, None], threshold=1.0), want)
    assert np.array_equal(overlay_heatmap(frame, m[None], threshold=1.0), want)


def test_save_png_writes_a_one_channel_image_as_gray(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = save_png(tmp_path / "g.png", gray[:, :, None])
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.shape == (8, 8) and np.array_equal(back, gray)


def test_histogram_counts_a_score_at_the_threshold_as_flagged_not_missed():
    """Result.is_anomaly is score >= threshold: a good part scoring exactly the threshold is flagged
    and a defective one is not missed. The legend's counts are the only difference a nudge of 1e-9
    above the threshold could make, so both drawings must be the same."""
    at, above = 1.0, 1.0 + 1e-9
    for good, defective, good_nudged, defective_nudged in (
            ([0.2, at], [2.0], [0.2, above], [2.0]),      # a good part at the threshold: 1 flagged
            ([0.2], [at, 2.0], [0.2], [above, 2.0])):     # a defective part at it: 0 missed
        drawn = score_histogram(good, defective, threshold=1.0)
        nudged = score_histogram(good_nudged, defective_nudged, threshold=1.0)
        assert np.array_equal(drawn, nudged)


def test_save_png_in_place_of_a_strided_array_writes_the_same_file(tmp_path):
    from edgecmg.imageio import read_image
    from edgecmg.visualize import save_png

    wide = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    strided = wide[:, ::2]
    want = np.ascontiguousarray(strided)
    save_png(tmp_path / "s.png", strided, in_place=True)
    np.testing.assert_array_equal(read_image(tmp_path / "s.png"), want)


def test_an_overlay_of_an_empty_frame_is_a_data_error():
    from edgecmg.visualize import overlay_heatmap

    with pytest.raises(DataError, match=r"frame is empty \(shape \(0, 5, 3\)\)"):
        overlay_heatmap(np.zeros((0, 5, 3), np.uint8), np.ones((2, 2), np.float32), 1.0)

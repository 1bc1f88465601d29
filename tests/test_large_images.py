"""Large frames: the conversions, the overlay and the predict command work band by band or in place
to bound their memory, and must give exactly the pixels of the whole-frame computation.

The references below are the whole-frame code those functions ran before (each step on the whole
array at once); every comparison is exact. Frames are 4-5 megapixels, so every banded step runs
over several bands (a band is about a megapixel), with odd sizes so that the last band is ragged.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edgecmg import imageio, visualize
from edgecmg.imageio import read_image, to_rgb_uint8
from edgecmg.visualize import overlay_heatmap, save_png

SHAPE = (2403, 1877)  # 4.5 megapixels, odd sides: 3 bands of the overlay, 5 of the conversions


# --- whole-frame references ---------------------------------------------------------------------
def reference_read(path: Path) -> np.ndarray:
    """read_image as one whole-frame computation (decode, drop a constant alpha, convert, swap)."""
    arr = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)  # BGR(A)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (2, 4) and arr[:, :, -1].min() == arr[:, :, -1].max():
        arr = arr[:, :, :-1] if arr.shape[2] == 4 else arr[:, :, 0]
    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] == 3):
        rgb = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
    else:
        top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else None
        if arr.dtype in (np.int32, np.uint32) and arr.max() <= 65535:
            top = 65535.0  # Pillow's "I" mode holds 16-bit data in int32
        f = (np.clip(arr.astype(np.float32) / top, 0.0, 1.0) if top is not None
             else np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0))
        if f.ndim == 2:
            f = f[:, :, None]
        elif f.shape[2] == 2:
            f = f[:, :, :1] * f[:, :, 1:2]
        elif f.shape[2] == 4:
            f = f[:, :, :3] * f[:, :, 3:4]
        rgb = np.rint(np.broadcast_to(f, f.shape[:2] + (3,)) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def reference_rgb_uint8(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """to_rgb_uint8's conversions, each on the whole array."""
    arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr * 255.0).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] in (2, 4) and arr[:, :, -1].min() != arr[:, :, -1].max():
        alpha = arr[:, :, -1:].astype(np.float32) / 255.0
        arr = np.rint(arr[:, :, :-1].astype(np.float32) * alpha).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] <= 2:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    arr = arr[:, :, :3]
    return np.ascontiguousarray(arr[:, :, ::-1] if bgr else arr)


def reference_overlay(frame: np.ndarray, anomaly_map: np.ndarray, threshold: float, alpha: float = 0.45,
                      label: str | None = None, contour: bool = True) -> np.ndarray:
    """overlay_heatmap as it was: every step on the whole frame, the outlines from the whole mask."""
    arr = frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame
    rgb = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else np.ascontiguousarray(arr[:, :, :3])
    h, w = rgb.shape[:2]
    m = np.asarray(anomaly_map)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    m = np.nan_to_num(m.astype(np.float32), nan=0.0, posinf=np.finfo(np.float32).max, neginf=0.0)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    unit = threshold if threshold > 0 else max(float(m.max()) / 2.0, 1e-6)
    _, clipped = cv2.threshold(m, 2.0 * unit, 0.0, cv2.THRESH_TRUNC)
    _, clipped = cv2.threshold(clipped, 0.0, 0.0, cv2.THRESH_TOZERO)
    level = cv2.convertScaleAbs(clipped, alpha=255.0 / (2.0 * unit))
    heat = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)
    scale = max(1, round(min(h, w) / 240))
    if contour:
        above = (m >= threshold).astype(np.uint8)
        if above.any():
            contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, (255, 255, 255), thickness=scale)
    if label:
        font, font_scale, thick, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, max(1, scale), 3 * scale
        # smaller type where the label is wider than the frame (the labels here are one word: none is cut)
        for smallest in (0.3, 0.2):  # down to 0.3 for the whole label, to 0.2 for its first word alone
            while font_scale > smallest and cv2.getTextSize(label, font, font_scale, thick)[0][0] + 2 * pad > w:
                font_scale = max(smallest, font_scale * 0.85)
        (tw, th), base = cv2.getTextSize(label, font, font_scale, thick)
        roi = out[:min(h - 1, th + base + 2 * pad), :min(w - 1, tw + 2 * pad)]
        roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)
        cv2.putText(out, label, (pad, pad + th), font, font_scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


# --- inputs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def part(kolektor_root) -> np.ndarray:
    """A real commutator image upscaled to SHAPE: uint8 gray."""
    src = cv2.imread(str(sorted((kolektor_root / "test" / "defect").iterdir())[0]), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(src, SHAPE[::-1], interpolation=cv2.INTER_CUBIC)


def colour(gray: np.ndarray) -> np.ndarray:
    """Three distinct channels from a gray image."""
    g = gray.astype(np.int16)
    return np.dstack([gray, np.clip(g + 23, 0, 255), np.clip(g - 11, 0, 255)]).astype(np.uint8)


def alpha_ramp(shape: tuple[int, int], top: int = 255, dtype=np.uint8) -> np.ndarray:
    return (np.linspace(0, top, shape[1])[None, :] * np.ones((shape[0], 1))).astype(dtype)


def write_case(kind: str, gray: np.ndarray, folder: Path) -> Path:
    rgb = colour(gray)
    noise = np.random.default_rng(0).integers(0, 257, rgb.shape).astype(np.uint16)
    rgb16 = rgb.astype(np.uint16) * 257 + noise  # uses the low byte too
    path = folder / f"{kind}.png"
    if kind == "gray":
        cv2.imwrite(str(path), gray)
    elif kind == "rgb":
        cv2.imwrite(str(path), rgb)
    elif kind == "jpeg":
        path = path.with_suffix(".jpg")
        cv2.imwrite(str(path), rgb)
    elif kind == "rgba":
        cv2.imwrite(str(path), np.dstack([rgb, alpha_ramp(gray.shape)]))
    elif kind in ("rgba_opaque", "rgba_padding"):
        cv2.imwrite(str(path), np.dstack([rgb, np.full_like(gray, 255 if kind == "rgba_opaque" else 0)]))
    elif kind == "gray_alpha":
        Image.fromarray(np.dstack([gray, alpha_ramp(gray.shape)]), "LA").save(path)
    elif kind == "gray16":
        cv2.imwrite(str(path), rgb16[:, :, 0])
    elif kind == "rgb16":
        cv2.imwrite(str(path), rgb16)
    elif kind == "rgba16":
        cv2.imwrite(str(path), np.dstack([rgb16, alpha_ramp(gray.shape, 65535, np.uint16)]))
    elif kind == "rgba16_padding":  # an alpha the same everywhere is dropped, not composited
        cv2.imwrite(str(path), np.dstack([rgb16, np.zeros(gray.shape, np.uint16)]))
    elif kind in ("int32_tiff", "int32_16bit_tiff"):  # the scale is set by the whole image's maximum
        path = path.with_suffix(".tiff")
        values = gray.astype(np.int32) * 257
        if kind == "int32_tiff":
            values[:5] += 70_000  # above 16 bits in the first band only
        Image.fromarray(values, "I").save(path)
    elif kind == "float_tiff":
        path = path.with_suffix(".tiff")
        cv2.imwrite(str(path), rgb.astype(np.float32) / 255.0)
    return path


READ_KINDS = ["gray", "rgb", "jpeg", "rgba", "rgba_opaque", "rgba_padding", "gray_alpha", "gray16", "rgb16",
              "rgba16", "rgba16_padding", "int32_tiff", "int32_16bit_tiff", "float_tiff"]


# --- reading and converting -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", READ_KINDS)
def test_read_image_of_a_large_file_is_the_whole_frame_conversion(kind, part, tmp_path):
    path = write_case(kind, part, tmp_path)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (*SHAPE, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, reference_read(path))


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (257, 5), (2, 3001)])
@pytest.mark.parametrize("kind", ["gray", "rgb", "rgba", "rgb16", "gray_alpha"])
def test_read_image_with_small_bands_and_odd_sizes(kind, shape, part, tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_BAND_PIXELS", 1000)  # many ragged bands, also one row narrower than a band
    path = write_case(kind, cv2.resize(part, shape[::-1], interpolation=cv2.INTER_AREA), tmp_path)
    np.testing.assert_array_equal(read_image(path), reference_read(path))


def frame_cases(gray: np.ndarray) -> dict[str, np.ndarray]:
    rgb = colour(gray)
    rgb16 = rgb.astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 257, rgb.shape).astype(np.uint16)
    return {
        "uint16_gray": rgb16[:, :, 0].copy(),
        "uint16_rgb": rgb16,
        "uint16_rgba": np.dstack([rgb16, alpha_ramp(gray.shape, 65535, np.uint16)]),
        "uint16_near_opaque": np.dstack([rgb16, np.full(gray.shape, 65534, np.uint16)]),  # 255 after scaling
        "rgba": np.dstack([rgb, alpha_ramp(gray.shape)]),
        "gray_alpha": np.dstack([gray, alpha_ramp(gray.shape)]),
        "float32": rgb.astype(np.float32) / 255.0,
        "float64": rgb16.astype(np.float64) / 65535.0,
        "float32_rgba": np.dstack([rgb, alpha_ramp(gray.shape)]).astype(np.float32) / 255.0,
    }


@pytest.mark.parametrize("bgr", [False, True])
def test_to_rgb_uint8_of_large_frames_is_the_whole_frame_conversion(part, bgr):
    for name, frame in frame_cases(part[:1601, :1377]).items():  # 2.2 megapixels: 3 bands
        before = frame.copy()
        got = to_rgb_uint8(frame, bgr=bgr)
        np.testing.assert_array_equal(got, reference_rgb_uint8(frame, bgr=bgr), err_msg=name)
        np.testing.assert_array_equal(frame, before, err_msg=f"{name}: the caller's frame was changed")


def test_to_rgb_uint8_swaps_in_place_only_its_own_arrays(part):
    bgr = colour(part)
    before = bgr.copy()
    got = to_rgb_uint8(bgr, bgr=True)  # the caller's uint8 frame: converted into a new array
    np.testing.assert_array_equal(bgr, before)
    np.testing.assert_array_equal(got, before[:, :, ::-1])
    rgb = colour(part)
    assert to_rgb_uint8(rgb) is rgb  # nothing to convert: the caller's own array, as before
    copied = to_rgb_uint8(rgb, copy=True)
    assert copied is not rgb and not np.may_share_memory(copied, rgb)
    uint16 = rgb.astype(np.uint16) * 257
    assert not np.may_share_memory(to_rgb_uint8(uint16, bgr=True, copy=True), uint16)


# --- overlays -------------------------------------------------------------------------------------
def map_cases(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    blobs = np.where(rng.random((41, 17)) > 0.85, 5.0, -1.0).astype(np.float32)
    inner = np.full((30, 12), -2.0, np.float32)
    inner[11:17, 4:9] = 4.0  # a hot block well inside: a small bounding box
    return {
        "model_size": rng.normal(0.5, 1.5, (26, 10)).astype(np.float32),
        "blobs": blobs,  # many outlines, some on the frame's edges
        "inner": inner,
        "all_hot": np.full((5, 4), 9.0, np.float32),
        "none_hot": np.full((5, 4), -3.0, np.float32),
        "frame_size": cv2.resize(blobs, shape[::-1], interpolation=cv2.INTER_LINEAR),
        "float64_1hw": rng.normal(1.0, 2.0, (1, 13, 7)),
        "non_finite": np.array([[np.nan, 1, 5], [np.inf, -np.inf, 2], [3, 0, 9]], np.float32),
    }


@pytest.mark.parametrize("layout", ["rgb", "gray", "gray_1", "rgba"])
def test_overlay_heatmap_of_a_large_frame_is_the_whole_frame_overlay(part, layout):
    rgb = colour(part)
    frame = {"rgb": rgb, "gray": part, "gray_1": part[:, :, None],
             "rgba": np.dstack([rgb, alpha_ramp(part.shape)])}[layout]
    maps = map_cases(part.shape)
    if layout != "rgb":  # the layouts differ before the colour steps only
        maps = {name: maps[name] for name in ("model_size", "blobs")}
    for name, anomaly_map in maps.items():
        for threshold, contour, label in ((2.0, True, "ANOMALY"), (0.0, True, None), (-1.0, False, "x")):
            got = overlay_heatmap(frame, anomaly_map, threshold, alpha=0.45, label=label, contour=contour)
            want = reference_overlay(frame, anomaly_map, threshold, 0.45, label, contour)
            np.testing.assert_array_equal(got, want, err_msg=f"{layout} {name} threshold={threshold}")


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (255, 7), (256, 3), (513, 300), (1000, 1)])
def test_overlay_heatmap_with_small_bands_and_odd_sizes(shape, monkeypatch):
    monkeypatch.setattr(visualize, "_BAND_PIXELS", 256)  # bands of 256 rows: a remainder joins the last band
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for name, anomaly_map in map_cases(shape).items():
        for alpha in (0.0, 0.3, 1.0):
            np.testing.assert_array_equal(overlay_heatmap(frame, anomaly_map, 2.0, alpha=alpha, label="7"),
                                          reference_overlay(frame, anomaly_map, 2.0, alpha, "7"), err_msg=name)


def test_outlines_from_the_bounding_box_are_those_of_the_whole_mask(monkeypatch):
    monkeypatch.setattr(visualize, "_BAND_PIXELS", 256)
    rng = np.random.default_rng(4)
    for trial in range(40):
        h, w = rng.integers(300, 900, 2)
        m = np.full((h, w), -1.0, np.float32)
        for _ in range(rng.integers(1, 6)):  # blocks anywhere, edges and corners included
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y:y + rng.integers(1, 200), x:x + rng.integers(1, 200)] = 3.0
        want = np.zeros((h, w), np.uint8)
        full, _ = cv2.findContours((m >= 2.0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(want, full, -1, 255, 1)
        got = np.zeros((h, w), np.uint8)
        cv2.drawContours(got, visualize._threshold_contours(m, 2.0), -1, 255, 1)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_overlay_drawn_into_dst_or_the_frame_itself_is_the_same_overlay(part):
    rgb = colour(part)
    for name, anomaly_map in map_cases(part.shape).items():
        want = overlay_heatmap(rgb, anomaly_map, 2.0, label="0.5")
        frame = rgb.copy()
        got = overlay_heatmap(frame, anomaly_map, 2.0, label="0.5", dst=frame)
        assert got is frame, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        dst = np.zeros_like(rgb)
        assert overlay_heatmap(part, anomaly_map, 2.0, label="0.5", dst=dst) is dst  # gray frame, separate dst
        np.testing.assert_array_equal(dst, overlay_heatmap(part, anomaly_map, 2.0, label="0.5"), err_msg=name)
    from edgecmg.errors import DataError

    read_only = rgb.copy()
    read_only.flags.writeable = False
    wide = np.zeros((part.shape[0], part.shape[1] * 2, 3), np.uint8)
    for bad, named in ((np.zeros((*part.shape, 3), np.float32), "the one given is dtype float32"),
                       (np.zeros((10, 10, 3), np.uint8), "the one given is shape (10, 10, 3)"),
                       (wide[:, ::2], "the one given is not C-contiguous"),
                       (read_only, "the one given is read-only"),
                       ("frame", "dst must be a numpy array of shape")):
        with pytest.raises(DataError, match=r"dst must be a") as info:
            overlay_heatmap(rgb, part.astype(np.float32), 2.0, dst=bad)
        assert named in str(info.value)  # the property that is wrong, not a repeat of what is asked


def test_save_png_in_place_writes_the_same_file(part, tmp_path):
    for name, image in (("rgb", colour(part)), ("gray", part)):
        before = image.copy()
        plain = save_png(tmp_path / f"{name}.png", image).read_bytes()
        np.testing.assert_array_equal(image, before)  # save_png leaves the caller's array alone
        assert save_png(tmp_path / f"{name}_in_place.png", image, in_place=True).read_bytes() == plain, name
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_UNCHANGED),
                                      before[:, :, ::-1] if before.ndim == 3 else before)


# --- the predict command --------------------------------------------------------------------------
# -1: every pixel outlined, the whole frame's bounding box
@pytest.mark.parametrize("kind, threshold", [("rgb", None), ("gray16", "-1")])
def test_predict_command_writes_what_the_python_api_gives(kind, threshold, small_artifact, part, tmp_path):
    from edgecmg.cli import main
    from edgecmg.detector import Detector

    paths = [write_case(kind, part, tmp_path), write_case("gray", part[:1001, :700], tmp_path)]
    extra = ["--threshold", threshold] if threshold else []
    out = tmp_path / "out"
    assert main(["-q", "predict", str(small_artifact), *map(str, paths), "--out", str(out), "--backend", "torch",
                 *extra]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    detector = Detector.load(small_artifact, backend="torch", threshold=float(threshold) if threshold else None)
    for path, record in zip(paths, records):
        result = detector.predict(read_image(path))
        # written as judged, not rounded (docs/outputs.md)
        assert record["score"] == result.score and record["overlay"] == str(out / f"{path.stem}_overlay.png")
        assert record["map_max"] == float(result.anomaly_map.max())
        want = save_png(tmp_path / "want.png", result.overlay()).read_bytes()
        assert Path(record["overlay"]).read_bytes() == want, path.name

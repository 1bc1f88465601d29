"""Heat-map overlays for anomaly maps, and PNG writing.

Colour scale: ``clip(map / (2 * threshold), 0, 1)`` through OpenCV's JET colour map, so the
decision threshold always sits in the middle of the scale (green), blue is well below it and
red is at twice the threshold or more, and colours mean the same thing on every frame.
"""
from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

from edgecmg.errors import ConfigError, DataError
from edgecmg.fileio import atomic_write_bytes

__all__ = ["contact_sheet", "overlay_heatmap", "save_png"]

_CONTOUR_RGB = (255, 255, 255)
_TEXT_RGB = (255, 255, 255)
_SHEET_BACKGROUND = 40  # gray level of contact-sheet borders and empty cells
_CAPTION_LINE = 18  # pixels per caption line of a contact sheet


#: Characters Unicode does not decompose into ASCII that have a usual ASCII spelling.
_ASCII_SPELLINGS = {"µ": "u", "μ": "u", "°": "deg", "×": "x", "–": "-", "—": "-", "‘": "'", "’": "'", "“": '"',
                    "”": '"', "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d",
                    "Đ": "D"}


def ascii_text(text: str) -> str:
    """``text`` in ASCII, the only glyphs cv2.putText has: accents dropped ("défaut" -> "defaut"; also
    full-width letters and ligatures, by Unicode's compatibility decomposition), a few symbols spelled
    out ("5µm" -> "5um"), and every other character as the JSON reports write it: "缺" as ``\\u7f3a``,
    a file name's byte that is not UTF-8 as ``\\udce9``. A '?' for each made "缺陷.jpg" and "裂纹.jpg"
    the same "??.jpg"; the escapes tell them apart and can be searched for in the reports.
    """
    return "".join(_ascii_char(char) for char in text)


def _ascii_char(char: str) -> str:
    if char.isascii():
        return char
    if char in _ASCII_SPELLINGS:
        return _ASCII_SPELLINGS[char]
    plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    # Character by character: a syllable that decomposes into other non-ASCII letters (Hangul) stays one.
    return plain if plain.isascii() else json.dumps(char)[1:-1]


def _fit_text(text: str, width: int, font_scale: float, thickness: int = 1) -> str:
    """``text``, or its start and end joined by '..' where it is wider than ``width`` pixels: a file
    name keeps its number and extension, which tell the images apart, where the right edge of a
    narrow cell cut them off."""
    def fits(candidate: str) -> bool:
        return cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)[0][0] <= width

    if fits(text):
        return text
    for keep in range(len(text) - 1, 1, -1):
        head = keep // 2
        short = f"{text[:head]}..{text[len(text) - (keep - head):]}"
        if fits(short):
            return short
    return text  # not even two characters fit: the edge cuts it, as it always did


def _frame_array(frame: Any) -> np.ndarray:
    """``frame`` checked as uint8 HxW gray, HxWx3 RGB or HxWx4 RGBA, without a copy ([H, W, 1] -> [H, W])."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise DataError(f"frame must be uint8 (got dtype {arr.dtype}); convert it, e.g. with edgecmg.imageio.read_image")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise DataError(f"frame must be HxW gray, HxWx3 RGB or HxWx4 RGBA, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"frame is empty (shape {arr.shape}): there are no pixels to draw on")
    return arr


def _as_rgb(arr: np.ndarray) -> np.ndarray:
    """A :func:`_frame_array` as contiguous RGB (a copy only for gray or RGBA)."""
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _frame_rgb(frame: Any) -> np.ndarray:
    return _as_rgb(_frame_array(frame))


def _map2d(anomaly_map: Any, height: int, width: int) -> np.ndarray:
    if hasattr(anomaly_map, "detach"):  # torch tensor without importing torch
        anomaly_map = anomaly_map.detach().cpu().numpy()
    m = np.asarray(anomaly_map)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise DataError(f"anomaly_map must be a 2-D HxW array, got shape {np.shape(anomaly_map)}")
    m = m.astype(np.float32, copy=False)
    # Rare: checking is a quarter of the cost of always converting; by bands, not a frame-sized mask.
    if not all(np.isfinite(m[start:stop]).all() for start, stop in _row_bands(*m.shape)):
        m = np.nan_to_num(m, nan=0.0, posinf=np.finfo(np.float32).max, neginf=0.0)
    if m.shape != (height, width):
        m = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
    return m


def _check_dst(dst: Any, shape: tuple[int, int]) -> None:
    want = (*shape, 3)
    if not isinstance(dst, np.ndarray):
        raise DataError(f"dst must be a numpy array of shape {want} (uint8 RGB), got a {type(dst).__name__}")
    wrong = ([f"dtype {dst.dtype}"] if dst.dtype != np.uint8 else []) + (
        [f"shape {dst.shape}"] if dst.shape != want else []) + (
        ["not C-contiguous"] if not dst.flags.c_contiguous else []) + ([
            "read-only"] if not dst.flags.writeable else [])
    if wrong:
        raise DataError(f"dst must be a writable C-contiguous uint8 array of shape {want} (the frame's size, RGB); "
                        f"the one given is {', '.join(wrong)}")


def overlay_heatmap(
    frame: Any,
    anomaly_map: Any,
    threshold: float,
    alpha: float = 0.45,
    label: Optional[str] = None,
    *,
    contour: bool = True,
    dst: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Blend a JET heat map of ``anomaly_map`` over ``frame``.

    Args:
        frame: ``uint8`` HxW gray, HxWx3 RGB or HxWx4 RGBA (the alpha channel is dropped).
        anomaly_map: float HxW (1xHxW accepted), any size; resized bilinearly to the frame.
        threshold: the detector's decision threshold; it maps to the middle of the colour
            scale, twice it to red. At or below 0 (a setting that flags every part) it gives no
            scale, and the map's own maximum is red instead.
        alpha: heat-map weight in [0, 1].
        label: optional text drawn in the top-left corner (ASCII; other characters are spelled or
            escaped), in smaller type on a narrow frame, and cut after its last word that fits.
        contour: draw a white outline where ``map >= threshold``.
        dst: a contiguous ``uint8`` HxWx3 array of the frame's size to draw into, as OpenCV's
            ``dst``; it may be ``frame`` itself (an RGB frame the caller is done with): a frame-sized
            array fewer, which counts at tens of megapixels.

    Returns:
        ``uint8`` HxWx3 RGB: ``dst``, or a new array.
    """
    thr = float(threshold)
    if not np.isfinite(thr):
        raise ConfigError(f"threshold={threshold} must be a finite number (the detector's decision threshold)")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"alpha={alpha} must be in [0, 1]")
    src = _frame_array(frame)
    h, w = src.shape[:2]
    if dst is not None:
        _check_dst(dst, (h, w))  # before the map is resized to the frame: 4 bytes a pixel
    m = _map2d(anomaly_map, h, w)
    unit = thr if thr > 0 else max(float(m.max()) / 2.0, 1e-6)  # the value drawn at the scale's middle
    contours = _threshold_contours(m, thr) if contour else ()  # before the output exists: less at once
    out = dst
    # Band by band (the steps are per pixel, so the result is the same): the temporaries of a
    # 144-megapixel frame's overlay were 7 bytes a pixel at once, now a few megabytes.
    for start, stop in _row_bands(h, w):
        # 0 -> 0, threshold -> 128, twice the threshold and above -> 255 (negatives -> 0), with
        # OpenCV's clipping and saturating conversion: 0.5 ms instead of 5 ms in numpy at 720p.
        _, clipped = cv2.threshold(m[start:stop], 2.0 * unit, 0.0, cv2.THRESH_TRUNC)  # huge values would overflow
        cv2.threshold(clipped, 0.0, 0.0, cv2.THRESH_TOZERO, dst=clipped)
        level = cv2.convertScaleAbs(clipped, alpha=255.0 / (2.0 * unit))
        heat = cv2.applyColorMap(level, cv2.COLORMAP_JET)
        # cvtColor, not a numpy [..., ::-1] copy: 0.1 ms instead of 5 ms on a 720p frame.
        cv2.cvtColor(heat, cv2.COLOR_BGR2RGB, dst=heat)
        if out is None:  # one band (frames up to about a megapixel): its heat map is the output, as it always was
            out = heat if stop == h else np.empty((h, w, 3), np.uint8)
        cv2.addWeighted(_as_rgb(src[start:stop]), 1.0 - a, heat, a, 0.0, dst=out[start:stop])

    scale = max(1, round(min(h, w) / 240))
    if len(contours):
        cv2.drawContours(out, contours, -1, _CONTOUR_RGB, thickness=scale)
    if label:
        text = ascii_text(label)
        font = cv2.FONT_HERSHEY_SIMPLEX
        font_scale = 0.45 * scale
        thick = max(1, scale)
        pad = 3 * scale
        # Fitted to the frame: smaller type down to a legible size, then the label's later words left out
        # (a 40-pixel frame showed "12.38" of "12.385 ANOMALY", which read as a part that passed).
        def fits(candidate: str) -> bool:
            return cv2.getTextSize(candidate, font, font_scale, thick)[0][0] + 2 * pad <= w

        while font_scale > 0.3 and not fits(text):
            font_scale = max(0.3, font_scale * 0.85)
        words = text.split(" ")
        shorter = [" ".join(words[:n]) for n in range(len(words), 0, -1)]
        text = next((c for c in shorter if c.count("(") == c.count(")") and fits(c)), words[0])  # no half "(...)"
        while font_scale > 0.2 and not fits(text):  # the first word (the verdict) alone: smaller still
            font_scale = max(0.2, font_scale * 0.85)
        (tw, th), base = cv2.getTextSize(text, font, font_scale, thick)
        x1, y1 = min(w - 1, tw + 2 * pad), min(h - 1, th + base + 2 * pad)
        roi = out[:y1, :x1]
        roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken behind the text
        cv2.putText(out, text, (pad, pad + th), font, font_scale, _TEXT_RGB, thick, cv2.LINE_AA)
    return out


#: Pixels per band of rows that the overlay's colour steps work on at a time.
_BAND_PIXELS = 1 << 20


def _row_bands(height: int, width: int) -> list[tuple[int, int]]:
    """(start, stop) row bands covering ``height`` rows: one band for frames up to 256 rows (or about
    a megapixel); otherwise bands of a multiple of 256 rows, the last 1 to 2 times that (the rest
    joins it). Every band but the last then holds whole SIMD vectors of any width and the last ends
    as the whole frame does, so OpenCV computes each pixel as one call over the whole frame would,
    vector or scalar alike (on x86 any band gives the same pixels; this holds for other vector units
    too, such as a Jetson's NEON)."""
    rows = max(256, _BAND_PIXELS // max(1, width) // 256 * 256)
    count = max(1, height // rows)
    return [(i * rows, (i + 1) * rows if i < count - 1 else height) for i in range(count)]


def _threshold_contours(m: np.ndarray, thr: float) -> Sequence[np.ndarray]:
    """Outlines of ``m >= thr``. findContours copies its input, so on a frame of several bands only
    the bounding box of the pixels at or above the threshold is handed to it (everything outside
    is 0, so the outlines are the same): a frame-sized mask and its copy cost 2 bytes a pixel."""
    h, w = m.shape
    x0, y0, x1, y1 = 0, 0, w, h
    bands = _row_bands(h, w)
    if len(bands) > 1:  # on one band the extra pass would cost more time than it saves memory
        x0, y0, x1, y1 = w, h, 0, 0
        for start, stop in bands:
            x, y, bw, bh = cv2.boundingRect((m[start:stop] >= thr).view(np.uint8))
            if bw:
                x0, y0, x1, y1 = min(x0, x), min(y0, start + y), max(x1, x + bw), max(y1, start + y + bh)
        if x1 == 0:
            return ()
    above = (m[y0:y1, x0:x1] >= thr).view(np.uint8)  # 0/1, as astype(np.uint8) gives, without the copy
    if not above.any():
        return ()
    contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
    return contours


def save_png(path: Union[str, Path], rgb: Any, *, in_place: bool = False) -> Path:
    """Write a ``uint8`` RGB (HxWx3) or gray (HxW) array as PNG; parent folders are created.

    Works with non-ASCII paths (encodes in memory, then writes bytes). ``in_place``: swap a
    contiguous RGB array's channels to BGR (what the encoder takes) inside the array itself, which
    the caller is then done with, instead of in a frame-sized copy.

    Raises:
        DataError: wrong dtype/shape. OutputError: the file cannot be written.
    """
    p = Path(path)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise DataError(f"save_png({p}): image must be uint8, got dtype {arr.dtype}; convert with np.clip(...).astype(np.uint8)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        if in_place and arr.flags.c_contiguous and arr.flags.writeable:
            for start, stop in _row_bands(*arr.shape[:2]):  # given the whole array as src and dst, cvtColor copies it
                view = arr[start:stop]
                cv2.cvtColor(view, cv2.COLOR_RGB2BGR, dst=view)
        else:
            arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise DataError(f"save_png({p}): image must be HxWx3 RGB or HxW gray, got shape {arr.shape}")
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise DataError(f"save_png({p}): PNG encoding failed for an array of shape {arr.shape}")
    # The buffer itself, not a bytes copy of it; never a half-written PNG.
    atomic_write_bytes(p, memoryview(buf), what="the image", sync=False)
    return p


MAX_CELL_ASPECT = 4  # a contact sheet's cell is at most this many cell heights wide


def contact_sheet(images: Sequence[np.ndarray], captions: Optional[Sequence[str]] = None, *, columns: int = 4,
                  cell_height: int = 256) -> np.ndarray:
    """Tile uint8 RGB images (e.g. overlays) into one picture, each scaled to ``cell_height``
    (aspect kept; one wider than ``MAX_CELL_ASPECT`` cell heights is scaled to that width instead,
    centred in its cell) with an optional caption strip above it (``"\\n"`` starts a new line;
    every strip is as tall as the longest caption); returns uint8 RGB.

    Raises:
        ConfigError: no images, ``columns`` < 1, ``cell_height`` < 16, or captions of another length.
    """
    if len(images) == 0:
        raise ConfigError("contact_sheet needs at least one image")
    if columns < 1 or cell_height < 16:
        raise ConfigError(f"columns={columns} must be >= 1 and cell_height={cell_height} >= 16")
    if captions is not None and len(captions) != len(images):
        raise ConfigError(f"{len(captions)} captions for {len(images)} images: give one per image or none")
    lines = [str(c).split("\n") for c in captions] if captions is not None else []
    strip = 4 + _CAPTION_LINE * max(len(c) for c in lines) if lines else 0
    cells = []
    for i, image in enumerate(images):
        rgb = _frame_rgb(image)
        h, w = rgb.shape[:2]
        width = max(1, round(w * cell_height / h))
        if width > MAX_CELL_ASPECT * cell_height:
            # Every cell is padded to the widest: one 2000x100 image made a sheet 25,616 pixels wide.
            width = MAX_CELL_ASPECT * cell_height
            height = max(1, round(h * width / w))
            cell = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            top = (cell_height - height) // 2
            cell = cv2.copyMakeBorder(cell, top, cell_height - height - top, 0, 0, cv2.BORDER_CONSTANT,
                                      value=(_SHEET_BACKGROUND,) * 3)
        else:
            cell = cv2.resize(rgb, (width, cell_height), interpolation=cv2.INTER_AREA)
        if captions is not None:
            cell = cv2.copyMakeBorder(cell, strip, 0, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            for row, text in enumerate(lines[i]):
                cv2.putText(cell, _fit_text(ascii_text(text), width - 8, 0.45), (4, _CAPTION_LINE * (row + 1) - 3),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, _TEXT_RGB, 1, cv2.LINE_AA)
        cells.append(cv2.copyMakeBorder(cell, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(_SHEET_BACKGROUND,) * 3))
    cell_w = max(c.shape[1] for c in cells)
    cells = [cv2.copyMakeBorder(c, 0, 0, 0, cell_w - c.shape[1], cv2.BORDER_CONSTANT,
                                value=(_SHEET_BACKGROUND,) * 3) for c in cells]
    blank = np.full_like(cells[0], _SHEET_BACKGROUND)
    rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    rows[-1] = rows[-1] + [blank] * (len(rows[0]) - len(rows[-1]))
    return cv2.vconcat([cv2.hconcat(row) for row in rows])


#: A threshold this many score ranges beyond every score is drawn as a mark at the histogram's edge.
OFF_SCALE_SPANS = 2.0

# Good parts blue, defective parts orange (Okabe-Ito, colour-blind safe), the threshold red; RGB.
_GOOD_RGB, _DEFECT_RGB, _THRESHOLD_RGB, _INK_RGB = (0, 114, 178), (230, 159, 0), (213, 94, 0), (40, 40, 40)


def score_histogram(good: Sequence[float], defective: Sequence[float], threshold: float, *,
                    title: str = "image scores", bins: int = 40) -> np.ndarray:
    """Histogram of image scores, good parts against defective ones, with the threshold as a line:
    where the two overlap is where the detector errs, and which way the threshold trades misses
    for false alarms. Returns uint8 RGB.

    Raises:
        DataError: no finite score at all.
    """
    good_scores = np.asarray(good, dtype=np.float64).ravel()
    defect_scores = np.asarray(defective, dtype=np.float64).ravel()
    good_scores, defect_scores = good_scores[np.isfinite(good_scores)], defect_scores[np.isfinite(defect_scores)]
    every = np.concatenate([good_scores, defect_scores])
    if every.size == 0:
        raise DataError("score_histogram: no finite score to draw")
    # A threshold far outside the scores (a --threshold for another model) is marked at the axis's edge
    # instead of being taken in: taken in, 1e5 squeezed 130 scores into two bars at the left.
    span = float(every.max() - every.min()) or 1.0
    off_scale = threshold > every.max() + OFF_SCALE_SPANS * span or threshold < every.min() - OFF_SCALE_SPANS * span
    lo = float(every.min() if off_scale else min(every.min(), threshold))
    hi = float(every.max() if off_scale else max(every.max(), threshold))
    pad = (hi - lo) * 0.04 or 1.0  # all scores equal: still a visible range
    lo, hi = lo - pad, hi + pad
    if off_scale:
        edges = np.linspace(lo, hi, bins + 1)
    else:  # bin edges on the threshold: no bar holds parts on both sides of it
        step = (hi - lo) / bins
        edges = threshold + step * np.arange(math.floor((lo - threshold) / step), math.ceil((hi - threshold) / step) + 1)
        lo, hi, bins = float(edges[0]), float(edges[-1]), len(edges) - 1
    good_counts, _ = np.histogram(good_scores, edges)
    defect_counts, _ = np.histogram(defect_scores, edges)

    width, height, left, right, top, bottom = 900, 420, 60, 20, 70, 50
    img = np.full((height, width, 3), 255, np.uint8)
    plot_w, plot_h = width - left - right, height - top - bottom
    axis_y = top + plot_h
    peak = max(int(good_counts.max(initial=0)), int(defect_counts.max(initial=0)), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def x_of(value: float) -> int:
        return int(round(left + (value - lo) / (hi - lo) * plot_w))

    bar_w = plot_w / bins
    for counts, colour, shift in ((good_counts, _GOOD_RGB, 0.0), (defect_counts, _DEFECT_RGB, 0.5)):
        for i, count in enumerate(counts):  # side by side within a bin, so neither hides the other
            if count:
                x0 = int(round(left + (i + shift) * bar_w))
                x1 = max(x0 + 1, int(round(left + (i + shift + 0.5) * bar_w)) - 1)
                cv2.rectangle(img, (x0, axis_y - int(round(count / peak * plot_h))), (x1, axis_y), colour, -1)
    cv2.line(img, (left, axis_y), (width - right, axis_y), _INK_RGB, 1)
    cv2.line(img, (left, top), (left, axis_y), _INK_RGB, 1)
    for frac in (0.0, 0.5, 1.0):  # value ticks at both ends and the middle, counts at 0 and the peak
        value = lo + frac * (hi - lo)
        label = f"{value:.3g}"
        (tw, th), _ = cv2.getTextSize(label, font, 0.45, 1)
        x = min(max(x_of(value) - tw // 2, 0), width - tw)
        cv2.putText(img, label, (x, axis_y + 8 + th), font, 0.45, _INK_RGB, 1, cv2.LINE_AA)
    cv2.putText(img, str(peak), (8, top + 10), font, 0.45, _INK_RGB, 1, cv2.LINE_AA)
    cv2.putText(img, "0", (8, axis_y), font, 0.45, _INK_RGB, 1, cv2.LINE_AA)
    cv2.putText(img, "parts", (8, top - 8), font, 0.4, _INK_RGB, 1, cv2.LINE_AA)  # what the bars count
    if off_scale:
        above = threshold > hi
        text = f"threshold {threshold:.4g} >>" if above else f"<< threshold {threshold:.4g}"
        (tw, _), _ = cv2.getTextSize(text, font, 0.45, 1)
        cv2.putText(img, text, (width - right - tw if above else left + 4, top + 4), font, 0.45, _THRESHOLD_RGB, 1,
                    cv2.LINE_AA)
    else:
        tx = x_of(threshold)
        cv2.line(img, (tx, top - 6), (tx, axis_y), _THRESHOLD_RGB, 2)
        cv2.putText(img, f"threshold {threshold:.4g}", (min(tx + 5, width - 150), top + 4), font, 0.45,
                    _THRESHOLD_RGB, 1, cv2.LINE_AA)
    # A long dataset name ran off the right edge: cut in its middle, as contact-sheet captions are.
    cv2.putText(img, _fit_text(ascii_text(title), width - left - 10, 0.65, 2), (left, 28), font, 0.65, _INK_RGB, 2,
                cv2.LINE_AA)
    missed = int(np.count_nonzero(defect_scores < threshold))  # Result.is_anomaly: score >= threshold
    alarms = int(np.count_nonzero(good_scores >= threshold))
    legend = [(f"good: {good_scores.size} ({alarms} flagged)", _GOOD_RGB),
              (f"defective: {defect_scores.size} ({missed} missed)", _DEFECT_RGB)]
    x = left
    for text, colour in legend:
        cv2.rectangle(img, (x, 44), (x + 12, 56), colour, -1)
        cv2.putText(img, text, (x + 18, 55), font, 0.45, _INK_RGB, 1, cv2.LINE_AA)
        x += 26 + cv2.getTextSize(text, font, 0.45, 1)[0][0] + 20
    (tw, _), _ = cv2.getTextSize("image score", font, 0.5, 1)
    cv2.putText(img, "image score", (left + plot_w // 2 - tw // 2, height - 10), font, 0.5, _INK_RGB, 1, cv2.LINE_AA)
    return img

"""Labels drawn with cv2.putText (ASCII glyphs only): hardest.png's captions turned every other
character into '?', so "défaut" read "d?faut" and two Chinese file names read the same "??.jpg"."""
from __future__ import annotations

import numpy as np
import pytest

from edgecmg.visualize import ascii_text, contact_sheet, overlay_heatmap


@pytest.mark.parametrize("text, expected", [
    ("kos01_Part0.jpg", "kos01_Part0.jpg"),
    ("défaut.png", "defaut.png"),
    ("de\u0301faut.png", "defaut.png"),  # the accent as a combining character (macOS writes names so)
    ("Łódź 5µm ×2 ﬁle Ａ１", "Lodz 5um x2 file A1"),
    ("缺陷 🙂 2.jpg", "\\u7f3a\\u9677 \\ud83d\\ude42 2.jpg"),  # as json.dumps writes them
    ("한.png", "\\ud55c.png"),  # one escape a syllable, not one per letter of its decomposition
    ("caf\udce9.jpg", "caf\\udce9.jpg"),  # a Latin-1 byte of a file name, as Python reads it
])
def test_ascii_text(text, expected):
    assert ascii_text(text) == expected
    assert ascii_text(text).isascii()


def _caption_strip(caption: str, width: int = 300) -> np.ndarray:
    image = np.full((60, width, 3), 128, np.uint8)
    return contact_sheet([image], [caption], columns=1, cell_height=60)[:24]


def test_captions_of_two_names_in_other_scripts_are_told_apart():
    assert not np.array_equal(_caption_strip("缺陷.jpg"), _caption_strip("裂纹.jpg"))


def test_a_caption_too_long_for_its_cell_keeps_its_end():
    """hardest.png's cells are as narrow as the image (KolektorSDD: about 130 pixels): the file
    name's end, its number, was cut off by the cell's edge, so two names read the same."""
    stem = "commutator_line3_camera2_2024-05-17_"
    first, second = _caption_strip(stem + "0001.jpg", 130), _caption_strip(stem + "0002.jpg", 130)
    assert not np.array_equal(first, second)


def test_a_caption_that_fits_is_drawn_as_before():
    """The same pixels as an ASCII caption's: only what putText cannot draw changes."""
    assert np.array_equal(_caption_strip("défaut 1.jpg"), _caption_strip("defaut 1.jpg"))


def test_overlay_label_drops_accents():
    frame = np.full((120, 160, 3), 90, np.uint8)
    heat = np.zeros((120, 160), np.float32)
    drawn = overlay_heatmap(frame, heat, 1.0, label="défaut 0.42")
    assert np.array_equal(drawn, overlay_heatmap(frame, heat, 1.0, label="defaut 0.42"))

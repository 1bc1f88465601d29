"""captions.csv given in a shape fit could only guess at: a header naming a column twice, and a
captions.csv that is a folder or a link to nothing (each was read, or left, without a word)."""
from __future__ import annotations

import logging

import pytest

from edgecmg.errors import DataError
from edgecmg.fit import _folder_captions, read_captions


def test_a_header_naming_a_column_twice_is_refused_not_read_by_its_first(tmp_path):
    (tmp_path / "captions.csv").write_text("file,text,text\na.png,shiny,scratched\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"captions.csv: its header names the column 'text' more than once "
                                        r"\('file,text,text'\); keep one 'file' and one 'text' column"):
        read_captions(tmp_path)
    (tmp_path / "captions.csv").write_text("file,file,text\na.png,b.png,shiny\n", encoding="utf-8")
    with pytest.raises(DataError, match="names the column 'file' more than once"):
        read_captions(tmp_path)


@pytest.mark.parametrize("make,kind", [
    (lambda path: path.mkdir(), "a folder"),
    (lambda path: path.symlink_to(path.parent / "gone.csv"), "a link to nothing"),
])
def test_a_captions_csv_that_is_not_a_file_is_said_not_passed_over(tmp_path, caplog, make, kind):
    image = tmp_path / "a.png"
    image.write_bytes(b"")  # only its folder is looked at
    make(tmp_path / "captions.csv")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert _folder_captions([image], cmle=True) is None
    said = [r.getMessage() for r in caplog.records if "captions.csv" in r.getMessage()]
    assert said and f"captions.csv ({kind}): not a file, so not read" in said[0], said
    assert "pseudo-text" in said[0]


def test_a_captions_csv_that_is_not_a_file_is_not_warned_about_where_captions_are_not_read(tmp_path, caplog):
    """Without CMLE, or with images from several folders, no captions.csv is read, a real one neither:
    "the images get pseudo-text instead of captions" would be wrong there."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    images = [tmp_path / "a" / "x.png", tmp_path / "b" / "y.png"]
    (tmp_path / "a" / "captions.csv").mkdir()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert _folder_captions(images[:1], cmle=False) is None
        assert _folder_captions(images, cmle=True) is None
    assert not [r for r in caplog.records if "not a file" in r.getMessage()]


def test_a_caption_matches_its_file_whichever_way_its_accents_are_written(kolektor_train, tmp_path, caplog):
    """"pièce.jpg" as a keyboard writes it (è one character) in captions.csv, and as macOS file systems
    name the file (e and an accent): the warning said the caption named no training image, beside a
    file whose name looked the same."""
    import unicodedata

    from edgecmg.config import ModelConfig
    from edgecmg.fit import fit

    folder = tmp_path / "good"
    folder.mkdir()
    decomposed = unicodedata.normalize("NFD", "pièce.jpg")
    for number, path in enumerate(kolektor_train[:12]):
        (folder / (decomposed if number == 0 else path.name)).symlink_to(path)
    (folder / "captions.csv").write_text("file,text\npièce.jpg,a commutator with a bright scratch\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        _, metadata = fit(folder, ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96),
                                              cmle_dim=8, max_bank_size=300), progress=False)
    assert metadata["training"]["captioned_images"] == 1
    assert "name no training image" not in caplog.text


def test_captions_given_to_fit_match_whichever_way_their_accents_are_written(kolektor_train, tmp_path):
    """A captions= dict built from the names of files made on macOS (accents apart) matched no image once
    the image names were compared in NFC alone."""
    import unicodedata

    from edgecmg.config import ModelConfig
    from edgecmg.fit import fit

    folder = tmp_path / "good"
    folder.mkdir()
    decomposed = unicodedata.normalize("NFD", "pièce.jpg")
    for number, path in enumerate(kolektor_train[:12]):
        (folder / (decomposed if number == 0 else path.name)).symlink_to(path)
    _, metadata = fit(folder, ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96), cmle_dim=8,
                                          max_bank_size=300),
                      captions={decomposed: "a commutator with a bright scratch"}, progress=False)
    assert metadata["training"]["captioned_images"] == 1

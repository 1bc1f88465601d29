"""File names at the file system's limits: long but legal names (NAME_MAX is 255 bytes, and a CJK
character takes 3 of them), symbolic links that lead nowhere given as output places, and file names
that are not UTF-8. Each once ended a command with a raw OS error or a traceback."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from edgecmg.cli import main
from edgecmg.errors import BackendUnavailableError, ConfigError, OutputError
from edgecmg.fileio import atomic_path, atomic_write_bytes, check_writable

NAME_MAX = 255
CJK = "零"  # 3 bytes in UTF-8


def nbytes(name: str) -> int:
    return len(os.fsencode(name))


# --- long names ----------------------------------------------------------------------------------

def test_a_legal_name_of_255_bytes_can_be_written_and_checked(tmp_path):
    """fit and export -o refused a legal 238-byte name: the temporary and probe names beside it are
    ~40 bytes longer, past NAME_MAX. Every name legal itself is written now."""
    for name in (CJK * 85, CJK * 79 + "a.edgecmg", "a" * 255):
        assert nbytes(name) <= NAME_MAX
        target = tmp_path / name
        check_writable(target, what="the model file")
        with atomic_path(target) as tmp:
            assert nbytes(tmp.name) <= NAME_MAX and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
            tmp.write_bytes(b"whole")
        assert target.read_bytes() == b"whole"
        atomic_write_bytes(target, b"again", sync=False)
        assert target.read_bytes() == b"again"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted((CJK * 85, CJK * 79 + "a.edgecmg", "a" * 255))
    # only a name that would pass NAME_MAX is cut: the export cache finds its leftovers by the whole
    # name (.NAME.PID-TID-HEX.tmp)
    with atomic_path(tmp_path / "part.onnx") as tmp:
        assert tmp.name.startswith(".part.onnx.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"whole")


def test_export_to_a_long_legal_name(small_artifact, tmp_path, capsys):
    name = CJK * 76 + "ab.onnx"  # 237 bytes
    out = tmp_path / name
    assert main(["-q", "export", str(small_artifact), "--format", "onnx", "-o", str(out)]) == 0, capsys.readouterr().err
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == [name]


def test_overlay_names_fit_name_max_and_stay_unique_and_recognisable():
    from edgecmg.commands.predict import unique_overlay_names

    long_a, long_b = CJK * 83, CJK * 83 + "b"  # 249 and 250 bytes: with _overlay.png past NAME_MAX
    names = unique_overlay_names([Path("x") / f"{long_a}.jpg", Path("x") / f"{long_b}.png", Path("x/000.png")])
    assert names[2] == "000_overlay.png"  # ordinary names as before
    for name, stem in zip(names[:2], (long_a, long_b)):
        # room for resume_predict's "_<number>" too
        assert nbytes(name) <= NAME_MAX - 8 and name.endswith("_overlay.png")
        assert name.startswith(CJK * 60)  # the start of the image's name
        assert hashlib.sha256(os.fsencode(stem)).hexdigest()[:8] in name
    assert len(set(names)) == 3
    # the same inputs give the same names (--resume compares them with the records kept)
    assert unique_overlay_names([Path("x") / f"{long_a}.jpg"]) == names[:1]
    # one long name in two folders: the folder's name in front, both cut, still apart
    clash = unique_overlay_names([Path("crack") / f"{long_a}.png", Path("good") / f"{long_a}.png"])
    assert len(set(clash)) == 2 and all(nbytes(n) <= NAME_MAX - 8 for n in clash)
    assert clash[0].startswith("crack_") and clash[1].startswith("good_")


def test_predict_and_resume_an_image_whose_name_is_near_name_max(small_artifact, kolektor_root, tmp_path, capsys):
    """predict stopped for good (exit 2, and again on each --resume) on an image whose name was ~250
    bytes: "<stem>_overlay.png" was past NAME_MAX."""
    good = sorted((kolektor_root / "test" / "good").iterdir())
    images = tmp_path / "images"
    images.mkdir()
    long_name = CJK * 83 + ".jpg"  # 253 bytes
    shutil.copy(good[0], images / long_name)
    shutil.copy(good[1], images / "plain.jpg")
    out = tmp_path / "out"
    args = ["-q", "predict", str(small_artifact), str(images), "--out", str(out), "--overlays", "all",
            "--backend", "torch"]
    assert main(args) == 0, capsys.readouterr().err

    def records():
        return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]

    first = {Path(r["file"]).name: Path(r["overlay"]).name for r in records()}
    assert set(first) == {long_name, "plain.jpg"}
    assert all((out / name).is_file() for name in first.values())
    assert nbytes(first[long_name]) <= NAME_MAX
    # a run stopped before the long-named image: its record and overlay are not there; --resume judges
    # it again under the same overlay name
    kept = [line for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
            if Path(json.loads(line)["file"]).name != long_name]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (out / first[long_name]).unlink()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert {Path(r["file"]).name: Path(r["overlay"]).name for r in records()} == first
    assert (out / first[long_name]).is_file()
    # another image of the same long name, resumed into the same folder: the kept overlay is not
    # overwritten, and the new one's name (with resume's "_1") still fits
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(good[2], other / long_name)
    assert main([*args[:3], str(other), *args[4:], "--resume"]) == 0, capsys.readouterr().err
    overlays = [Path(r["overlay"]).name for r in records()]
    assert len(overlays) == 3 and len(set(overlays)) == 3
    assert all((out / name).is_file() and nbytes(name) <= NAME_MAX for name in overlays)


def test_the_export_cache_takes_a_model_with_a_long_name(small_artifact, tmp_path):
    """A model whose name was 233 bytes ended predict with "[Errno 36] File name too long": the cache
    entry's name is the stem and 40 bytes of key."""
    from edgecmg.export_cache import _CACHE_ENTRY, _CACHE_LEFTOVER, cached_onnx

    model = tmp_path / (CJK * 75 + ".edgecmg")  # 233 bytes
    shutil.copy(small_artifact, model)
    cache = tmp_path / "cache"
    entry, header = cached_onnx(model, directory=cache)
    assert entry.is_file() and entry.name.startswith(CJK * 40) and _CACHE_ENTRY.fullmatch(entry.name)
    assert header["export"]["artifact_sha256"]
    assert cached_onnx(model, directory=cache)[0] == entry  # found again, not exported again
    assert [p.name for p in cache.iterdir()] == [entry.name]
    with atomic_path(entry) as tmp:  # what a killed export would leave is still known as the cache's
        assert _CACHE_LEFTOVER.fullmatch(tmp.name)
        tmp.write_bytes(entry.read_bytes())


def test_a_cache_folder_that_cannot_be_looked_into_is_an_unavailable_backend(small_artifact, tmp_path):
    """An OSError looking for the entry (here a folder name past NAME_MAX) was raised raw; it is a
    backend that cannot run here, as an unwritable cache is, so auto goes on to torch."""
    from edgecmg.export_cache import cached_onnx

    with pytest.raises(BackendUnavailableError, match="backend 'onnxruntime' is unavailable"):
        cached_onnx(small_artifact, directory=tmp_path / ("d" * 300))


# --- symbolic links that lead nowhere ------------------------------------------------------------

@pytest.fixture
def links(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink("outloop", "outloop")
    os.symlink("missing_dir", "outlink")
    os.mkdir("real")
    os.symlink("real", "goodlink")
    return tmp_path


def test_an_output_folder_that_is_a_link_loop_or_a_link_to_nowhere_is_named_so(links):
    """--out a link loop printed a RuntimeError traceback (Path.resolve); --out a link to a missing
    folder said "[Errno 17] File exists"."""
    from edgecmg.commands import check_out_outside_inputs, output_folder

    with pytest.raises(ConfigError, match=r"--out outloop: outloop is a symbolic link that leads round in a loop"):
        check_out_outside_inputs("outloop", "--out", ["images"])
    with pytest.raises(ConfigError, match=r"--out outloop/sub: outloop is a symbolic link that leads round in a loop"):
        with output_folder("outloop/sub"):
            pass
    with pytest.raises(ConfigError, match=r"--out outlink: outlink is a symbolic link to missing_dir, which does "
                                          r"not exist; create missing_dir, or remove the link"):
        with output_folder("outlink"):
            pass
    with output_folder("goodlink") as out:  # a link to a folder is a folder
        assert out.is_dir()
    assert not (links / "missing_dir").exists()


def test_a_file_under_a_broken_link_names_the_link(links):
    """fit -o and stream's --report/--jsonl under a link loop said "a part of its folder path is a file,
    not a folder", which it is not."""
    with pytest.raises(OutputError, match=r"cannot write the model file outloop/m.edgecmg: outloop is a symbolic "
                                          r"link that leads round in a loop"):
        check_writable("outloop/m.edgecmg", what="the model file")
    with pytest.raises(OutputError, match=r"cannot write outlink/x.jsonl: outlink is a symbolic link to "
                                          r"missing_dir, which does not exist"):
        check_writable("outlink/x.jsonl")
    with pytest.raises(OutputError, match=r"outloop is a symbolic link that leads round in a loop"):
        atomic_write_bytes("outloop/m.edgecmg", b"data")
    # a link to a file not there yet is the file's name, replaced whole: no error
    os.symlink("not_yet.onnx", "pointer.onnx")
    check_writable("pointer.onnx")
    atomic_write_bytes("pointer.onnx", b"data", sync=False)
    assert Path("pointer.onnx").read_bytes() == b"data"


def test_predict_with_out_a_link_loop_is_an_error_line_not_a_traceback(small_artifact, kolektor_root, links,
                                                                      capsys):
    images = str(kolektor_root / "test" / "good")
    for out, says in (("outloop", "outloop is a symbolic link that leads round in a loop"),
                      ("outlink", "outlink is a symbolic link to missing_dir, which does not exist")):
        assert main(["-q", "predict", str(small_artifact), images, "--out", out, "--backend", "torch"]) == 2
        err = capsys.readouterr().err
        assert f"edgecmg predict: error: --out {out}: {says}" in err and "Traceback" not in err


# --- names that are not UTF-8 --------------------------------------------------------------------

def test_the_calibration_fingerprint_takes_a_name_that_is_not_utf8(tmp_path):
    """calibrate crashed (UnicodeEncodeError) on a data folder holding a Latin-1 name."""
    from edgecmg.calibration.data import fingerprint

    latin1 = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    try:
        latin1.write_bytes(b"an image")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes no name that is not UTF-8")
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(b"another")
    print_ = fingerprint([latin1, plain])
    assert print_ == fingerprint([latin1, plain]) and print_ != fingerprint([plain])
    # an ordinary name's fingerprint is what it was: calibration caches made before stay valid
    info = plain.stat()
    before = hashlib.sha256(f"plain.jpg\0{info.st_size}\0{info.st_mtime_ns}\n".encode()).hexdigest()
    assert fingerprint([plain]) == before
    cjk = tmp_path / f"{CJK}.jpg"
    cjk.write_bytes(b"x")
    info = cjk.stat()
    assert fingerprint([cjk]) == hashlib.sha256(f"{CJK}.jpg\0{info.st_size}\0{info.st_mtime_ns}\n".encode()).hexdigest()


def test_a_link_to_a_dangling_link_is_not_said_to_be_creatable(links):
    """A -> B with B itself a link to nothing said "create B", which exists (as a link) and cannot be."""
    from edgecmg.commands import output_folder

    os.symlink("outlink", "chain")  # chain -> outlink -> missing_dir
    with pytest.raises(ConfigError, match=r"--out chain: chain is a symbolic link to outlink, itself a link that "
                                          r"leads to nothing \(ls -l outlink\)"):
        with output_folder("chain"):
            pass

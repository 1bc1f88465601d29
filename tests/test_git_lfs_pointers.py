"""Models and images kept in Git LFS and cloned without their files (130-byte pointers in their
place): named as such, with the command that fetches them, by every reader; before, each was
refused as damaged ("bad magic b'version '"), which sends people copying the file again."""
from __future__ import annotations

import pytest

from edgecmg.errors import DataError, EdgeCMGError

POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"4d" * 32 + b"\nsize 330585\n"
SAID = r"is a Git LFS pointer, not the file itself: .*git lfs pull"


@pytest.mark.parametrize("name", ["part.edgecmg", "part.onnx", "part.engine"])
def test_a_model_file_that_is_a_git_lfs_pointer_says_so(tmp_path, name):
    from edgecmg import Detector
    from edgecmg.commands.info import describe

    path = tmp_path / name
    path.write_bytes(POINTER)
    with pytest.raises(EdgeCMGError, match=SAID):
        Detector.load(path)
    with pytest.raises(EdgeCMGError, match=SAID):
        describe(path)


def test_export_of_a_pointer_and_an_image_that_is_one_say_so(tmp_path):
    from edgecmg import artifact
    from edgecmg.imageio import read_image

    model = tmp_path / "part.edgecmg"
    model.write_bytes(POINTER)
    with pytest.raises(EdgeCMGError, match=SAID):
        artifact.load(model)
    image = tmp_path / "part_001.png"
    image.write_bytes(POINTER)
    with pytest.raises(DataError, match=f"part_001.png {SAID}"):
        read_image(image)


def test_a_model_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    import os
    import threading

    from edgecmg import Detector

    fifo = tmp_path / "part.edgecmg"
    os.mkfifo(fifo)
    raised = []

    def load():
        try:
            Detector.load(fifo)
        except EdgeCMGError as exc:
            raised.append(str(exc))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # blocked opening the FIFO: let it go (a writer opens and closes it) and fail
        with open(fifo, "wb"):
            pass
        worker.join(5)
        pytest.fail("Detector.load waited on a FIFO given as a model file")
    assert raised and "FIFO" in raised[0], raised

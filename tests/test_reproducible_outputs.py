"""What edgecmg writes about a run does not depend on the folder it ran in: a model whose threshold
was set from relative paths held them as typed in one field and resolved in the next."""
from __future__ import annotations

import shutil

import cv2
import numpy as np

from edgecmg import artifact
from edgecmg.cli import main


def test_threshold_records_the_images_it_left_out_by_resolved_path(small_artifact, kolektor_root, tmp_path,
                                                                   monkeypatch):
    folder = tmp_path / "good"
    folder.mkdir()
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:11]:
        shutil.copy(path, folder / path.name)
    # One "good" image unlike the rest (a checkerboard): far above the others, left out of the threshold.
    checkerboard = (np.indices((500, 200)).sum(axis=0) // 10 % 2 * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "stray.png"), checkerboard)
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "threshold", str(small_artifact), "good", "--backend", "torch", "-o", "copy.edgecmg"]) == 0
    header, _ = artifact.read_header(tmp_path / "copy.edgecmg")
    assert header["threshold_set"]["left_out"] == [str(folder / "stray.png")]
    assert header["threshold_set"]["sources"] == [str(folder)]

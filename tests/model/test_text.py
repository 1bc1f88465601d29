"""The MiniLM text encoder's import guard: the clone's kernels/ folder must never pass silently for
Hugging Face's `kernels` package, which transformers imports."""
import importlib.metadata
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edgecmg.model import text

REPO = Path(__file__).resolve().parents[2]


def test_clone_kernels_folder_is_recognised(monkeypatch):
    ours = types.ModuleType("kernels")
    ours.__file__ = str(REPO / "kernels" / "__init__.py")
    monkeypatch.setitem(sys.modules, "kernels", ours)
    assert text._clone_kernels_folder() == (REPO / "kernels").resolve()


def test_other_kernels_package_is_left_alone(monkeypatch, tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "knn.py").write_text("")  # same file name, but no edgecmg/ beside it
    theirs = types.ModuleType("kernels")
    theirs.__file__ = str(tmp_path / "kernels" / "__init__.py")
    monkeypatch.setitem(sys.modules, "kernels", theirs)
    assert text._clone_kernels_folder() is None
    monkeypatch.delitem(sys.modules, "kernels")
    assert text._clone_kernels_folder() is None


def test_encoder_started_in_the_clone_root_loads_or_says_why():
    """`python -c` in the clone's root puts the root on sys.path. Either the encoder loads with the
    real `kernels` package, or it fails with a message naming the folder and what to do; never with
    transformers' bare "cannot import name ... from 'kernels'"."""
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's kernels package is not installed: nothing can be hidden")
    code = ("import sys; from edgecmg.model.text import encode_texts; encode_texts(['a part']); "
            "print(sys.modules['kernels'].__file__ if 'kernels' in sys.modules else 'not imported')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        assert not done.stdout.strip().splitlines()[-1].startswith(str(REPO / "kernels"))
    else:
        assert "hides Hugging Face's 'kernels' package" in done.stderr, done.stderr[-2000:]
        assert str((REPO / "kernels").resolve()) in done.stderr
        assert "start Python, notebooks and scripts from another folder" in done.stderr

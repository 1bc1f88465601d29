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


def test_transformers_5_beside_an_older_torch_says_what_to_install(monkeypatch):
    """transformers 5 needs torch 2.6 but does not declare it: beside torch 2.5 (JetPack 6.1) its import
    failed with "NameError: name 'nn' is not defined". The encoder refuses first, naming both versions."""
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "5.20.2" if name == "transformers" else real_version(name))
    monkeypatch.setattr(text.torch, "__version__", "2.5.1+cu124")
    with pytest.raises(text.BackendUnavailableError, match=r"transformers 5\.20\.2 needs torch 2\.6 or later, and "
                       r"this torch is 2\.5\.1\+cu124") as info:
        text._sentence_model.__wrapped__()  # the uncached body: the suite's encoder may be loaded already
    assert "pip install 'transformers<5' 'sentence-transformers<6'" in info.value.install_hint
    monkeypatch.setattr(text.torch, "__version__", "2.6.0")
    assert text._transformers_needs_newer_torch() is None
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "4.57.6" if name == "transformers" else real_version(name))
    monkeypatch.setattr(text.torch, "__version__", "2.5.1")
    assert text._transformers_needs_newer_torch() is None
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "5.25.0" if name == "transformers" else real_version(name))
    monkeypatch.setattr(text.torch, "__version__", "2.6.0a0+ecf3bae40a.nv25.01")  # NVIDIA's pre-release
    assert "this torch is 2.6.0a0" in text._transformers_needs_newer_torch()  # transformers disables it too
    monkeypatch.setattr(text.torch, "__version__", "unknown")  # a version that cannot be read refuses nothing
    assert text._transformers_needs_newer_torch() is None
    monkeypatch.setattr(importlib.metadata, "version",  # a stale dist-info without METADATA
                        lambda name: None if name == "transformers" else real_version(name))
    assert text._transformers_needs_newer_torch() is None


def test_imagenet_class_names_are_the_first_synonym_of_each_class_in_index_order():
    names = text.imagenet_class_names()
    assert len(names) == 1000
    assert names[:3] == ("tench", "goldfish", "great white shark")
    assert names[281] == "tabby" and names[967] == "espresso"


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_the_encoder_quietly_leaves_the_callers_progress_bar_setting(enabled):
    hf_logging = pytest.importorskip("transformers.utils.logging")
    was = hf_logging.is_progress_bar_enabled()
    try:
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        with text._quiet_transformers():
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() is enabled
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()

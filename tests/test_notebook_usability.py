"""What a notebook user meets first: a Result shown as its picture, short reprs of frames, no
"IProgress not found" warning from importing fit, a plain error for Detector(path), and tab completion
on ``edgecmg.`` that lists the public names only."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecmg.detector import Detector
from edgecmg.errors import ConfigError

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def judged(small_artifact, kolektor_train):
    """(frame, Result) of a real model on a real image."""
    from edgecmg.imageio import read_image

    frame = read_image(kolektor_train[0])
    with Detector.load(small_artifact, backend="torch", device="cpu") as det:
        return frame, det.predict(frame)


def _decoded(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "not a PNG"
    return image


def test_a_result_shows_as_its_overlay_in_a_notebook(judged):
    frame, result = judged
    assert result.frame is not None
    shown = _decoded(result._repr_png_())
    assert shown.shape == frame.shape
    assert np.array_equal(shown, cv2.cvtColor(result.overlay(), cv2.COLOR_RGB2BGR))  # the overlay, as RGB
    assert repr(result).startswith("Result(score=")  # the text repr is still the short one


def test_a_result_without_its_frame_shows_its_heat_map_and_one_that_cannot_be_drawn_shows_none(judged):
    _, result = judged
    no_frame = dataclasses.replace(result, frame=None)
    assert _decoded(no_frame._repr_png_()).shape == (*result.anomaly_map.shape, 3)
    # Jupyter shows the text repr where _repr_png_ gives None; raising would print a traceback instead
    assert dataclasses.replace(no_frame, anomaly_map=np.zeros((0, 0), np.float32))._repr_png_() is None
    assert dataclasses.replace(result, threshold=float("inf"))._repr_png_() is None


@pytest.mark.parametrize("path", ["part.edgecmg", Path("part.edgecmg")])
def test_detector_given_a_path_says_to_load_it(path):
    with pytest.raises(ConfigError, match=r"Detector\.load\(path\).*Detector\.from_model"):
        Detector(path)
    assert "load" in Detector.__doc__ and "from_model" in Detector.__doc__


def test_the_repr_of_a_frame_and_a_stream_item_names_the_image_shape_not_its_pixels(kolektor_train):
    from edgecmg.stream.pipeline import StreamItem
    from edgecmg.stream.sources import open_source

    with open_source(kolektor_train[:1]) as source:
        frame = source.read()
    assert frame is not None and frame.image.size > 10_000
    text = repr(frame)
    assert "\n" not in text and len(text) < 300, text
    assert str(frame.image.shape) in text and repr(frame.source) in text
    item = StreamItem(frame=frame, preprocessed=frame.image.astype(np.float32), capture_wait_ms=0.0,
                      preprocess_ms=1.0, age_ms=2.0, captured_perf_s=3.0)
    text = repr(item)
    assert "\n" not in text and len(text) < 400, text
    assert str(frame.image.shape) in text


def _run(probe: str) -> str:
    # a fresh interpreter, outside the repository root (its kernels/ folder would shadow edgecmg.kernels)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=TESTS)
    return out.stdout.strip()


def test_importing_fit_in_a_jupyter_kernel_without_ipywidgets_does_not_warn():
    # A Jupyter kernel as tqdm.autonotebook tells one (ipykernel's shell loaded, IPython's shell a
    # ZMQInteractiveShell), with ipywidgets not installed.
    probe = """
import sys, types, warnings
sys.modules["ipywidgets"] = None
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
ipython = types.ModuleType("IPython")
class ZMQInteractiveShell: pass
ipython.get_ipython = lambda: ZMQInteractiveShell()
sys.modules["IPython"] = ipython

def tqdm_warnings(statement):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(statement)
    return [str(w.message) for w in caught if w.category.__name__ == "TqdmWarning"]

print(repr(tqdm_warnings("import edgecmg.fit, edgecmg.evaluation, edgecmg.calibration.data")))
print(repr(tqdm_warnings("import tqdm.auto")))
"""
    ours, tqdm_auto = (eval(line) for line in _run(probe).splitlines()[-2:])
    assert ours == []
    assert tqdm_auto and "IProgress not found" in tqdm_auto[0]  # the probe is a kernel tqdm.auto warns in
    from edgecmg.progress import tqdm
    from tqdm.std import tqdm as text_bar

    assert issubclass(tqdm, text_bar)


def test_tab_completion_on_the_package_lists_its_public_names_only():
    probe = ("import sys, edgecmg, edgecmg.stream; print(dir(edgecmg)); print(dir(edgecmg.stream)); "
             "print('edgecmg.pixel_limit' in sys.modules)")
    top, stream, limit_set = (eval(line) for line in _run(probe).splitlines()[-3:])
    for listed in (top, stream):
        public = [name for name in listed if not name.startswith("_")]
        assert not {"TYPE_CHECKING", "lazy_exports", "lazy", "magic", "pixel_limit", "edgecmg"} & set(public), public
    import edgecmg
    import edgecmg.stream

    assert sorted(n for n in top if not n.startswith("_")) == sorted(n for n in edgecmg.__all__ if not n.startswith("_"))
    assert sorted(n for n in stream if not n.startswith("_")) == sorted(edgecmg.stream.__all__)
    assert "__version__" in top
    assert limit_set  # OpenCV's decode limit still set by `import edgecmg`, under a private name

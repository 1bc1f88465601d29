"""Shared fixtures: real data from ../shared/data and one small real model fitted per session."""
from __future__ import annotations

import os
from pathlib import Path

import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
KOLEKTOR = REPO.parent / "shared" / "data" / "kolektorsdd"


@pytest.fixture(scope="session", autouse=True)
def _session_export_cache(tmp_path_factory):
    """ONNX exports the tests cause (an .edgecmg opened with ONNX Runtime) go to a folder of the
    session's own instead of the user's ~/.cache/edgecmg, which grew by about 19 MB a model per run."""
    previous = os.environ.get("EDGECMG_CACHE_DIR")
    os.environ["EDGECMG_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgecmg-cache"))
    yield
    if previous is None:
        os.environ.pop("EDGECMG_CACHE_DIR", None)
    else:
        os.environ["EDGECMG_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def kolektor_root() -> Path:
    if not (KOLEKTOR / "train" / "good").is_dir():
        pytest.skip(f"KolektorSDD not found at {KOLEKTOR} (expected ../shared/data beside the repo)")
    return KOLEKTOR


@pytest.fixture(scope="session")
def kolektor_train(kolektor_root: Path) -> list[Path]:
    return sorted((kolektor_root / "train" / "good").iterdir())


@pytest.fixture(scope="session")
def small_fit(kolektor_train):
    """A real CMG model (pretrained backbone, MiniLM) fitted on 24 good commutator images."""
    from edgecmg.config import ModelConfig
    from edgecmg.fit import fit

    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96), cmle_dim=32,
                         max_bank_size=2000)
    return fit(kolektor_train[:24], config, progress=False)


@pytest.fixture(scope="session")
def small_artifact(small_fit, tmp_path_factory) -> Path:
    from edgecmg import artifact

    model, metadata = small_fit
    return artifact.save(model, metadata, tmp_path_factory.mktemp("model") / "commutator.edgecmg")


# --- exported-model fixtures for tests/runtime, tests/export and tests/calibration ---------------
# One copy here instead of one conftest per folder; the model builders live in tests/runtime.
sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime"))

import edgecmg_testmodels as models  # noqa: E402


@pytest.fixture(scope="session")
def artifact_path(tmp_path_factory) -> Path:
    return models.fitted_artifact(tmp_path_factory)


@pytest.fixture(scope="session")
def model_and_header(tmp_path_factory):
    return models.loaded_model(tmp_path_factory)


@pytest.fixture(scope="session")
def featurizer_onnx(tmp_path_factory) -> Path:
    return models.exported_onnx(tmp_path_factory, with_scoring=False)


@pytest.fixture(scope="session")
def full_onnx(tmp_path_factory) -> Path:
    return models.exported_onnx(tmp_path_factory, with_scoring=True)


@pytest.fixture(scope="session")
def frames_and_labels():
    return models.eval_frames()


@pytest.fixture(scope="session")
def torch_reference(tmp_path_factory, frames_and_labels):
    return models.torch_outputs(tmp_path_factory, frames_and_labels[0])


@pytest.fixture
def ort_float16_qdq():
    """Call before ONNX Runtime runs a float16 Q/DQ graph (what `edgecmg build` hands TensorRT) as the
    reference: the rest of the test skips below 1.30, whose QuantizeLinear rounds float16 quotients
    otherwise (0.3303 / 0.02 = 16.51 came out as 16 where numpy and 1.30 give 17), a whole quantisation
    step off: the reference is wrong there, not the graph. (Found on onnxruntime 1.20 and 1.29.) The
    structural checks before the call still run."""
    def need_reference():
        ort = pytest.importorskip("onnxruntime")
        major, minor = (int(part) for part in ort.__version__.split(".")[:2])
        if (major, minor) < (1, 30):
            pytest.skip(f"onnxruntime {ort.__version__} rounds float16 QuantizeLinear differently from 1.30 and "
                        "later (the checks before its run passed)")

    return need_reference


@pytest.fixture
def block_import(monkeypatch):
    """``block_import(name, message)``: from then on in the test, ``import name`` raises ImportError(message)."""
    import builtins

    real_import = builtins.__import__

    def block(blocked: str, message: str = "no module") -> None:
        def fake_import(name, *args, **kwargs):
            if name == blocked:
                raise ImportError(message)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", fake_import)

    return block


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """Install a fake ``tensorrt`` module (TensorRT 10 flavour by default); returns its factory."""
    import fake_tensorrt as fake

    def install(**kwargs):
        module = fake.make(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module

    return install


class HeldCall:
    """``call()`` run on a daemon thread, held inside ``obj.<method>`` until ``release`` is set: the
    state of another thread's call under way, for close-while-running tests. Daemon: a test that fails
    while something waits on it cannot hang the run at exit. ``outcome`` holds the call's return value
    ("result") or its EdgeCMGError ("error")."""

    def __init__(self, monkeypatch, obj, method: str, call) -> None:
        import threading

        from edgecmg.errors import EdgeCMGError

        self.inside, self.release, self.outcome = threading.Event(), threading.Event(), {}
        original = getattr(obj, method)

        def held(*args, **kwargs):
            self.inside.set()
            assert self.release.wait(10)
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, method, held)

        def run():
            try:
                self.outcome["result"] = call()
            except EdgeCMGError as exc:
                self.outcome["error"] = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.inside.wait(10)


@pytest.fixture
def held_call(monkeypatch):
    """held_call(obj, "method", call) -> a HeldCall under way."""
    return lambda obj, method, call: HeldCall(monkeypatch, obj, method, call)

"""Fixtures for the export tests, shared with tests/runtime: a fitted model, exports, frames."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

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
def fake_tensorrt(monkeypatch):
    """Install a fake ``tensorrt`` module (TensorRT 10 flavour by default); returns its factory."""
    import fake_tensorrt as fake

    def install(**kwargs):
        module = fake.make(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module

    return install

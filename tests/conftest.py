"""Shared fixtures: real data from ../shared/data and one small real model fitted per session."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KOLEKTOR = REPO.parent / "shared" / "data" / "kolektorsdd"


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

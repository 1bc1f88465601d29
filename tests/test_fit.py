"""fit() with the CMG parts switched off (the ablation settings of the benchmark)."""
import torch

from edgecmg.config import ModelConfig
from edgecmg.fit import fit


def test_fit_without_cmle_and_cmer_is_the_plain_baseline(kolektor_train):
    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96), cmle=False, cmer=False,
                         max_bank_size=500)
    model, metadata = fit(kolektor_train[:12], config, progress=False)
    channels = model.geometry.layout.channels
    # No CMLE: the patch features enter the bank unprojected.
    assert metadata["training"]["feature_dim"] == channels == model.scorer.memory_bank.shape[1]
    assert torch.equal(model.featurizer.projection, torch.eye(channels))
    # No CMER: zero margins, and every cell stays in the image score.
    assert metadata["cmer_margin"] == [0.0] * config.grid ** 2
    frames = torch.randint(0, 256, (2, 256, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert model(frames).kept_mask.all()

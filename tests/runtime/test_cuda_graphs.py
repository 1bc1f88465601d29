"""CUDA-graph replay of the backbone part (edgecmg.runtime.cuda_graphs).

The switch logic runs everywhere; replay itself needs a CUDA device and skips without one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecmg.runtime import cuda_graphs
from edgecmg.runtime.cuda_graphs import GraphReplayer, graphs_enabled

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_graphs_only_on_cuda_and_can_be_switched_off(monkeypatch):
    monkeypatch.delenv(cuda_graphs.ENV_VAR, raising=False)
    assert not graphs_enabled("cpu")
    assert graphs_enabled("cuda") and graphs_enabled("cuda:1")
    for off in ("0", "false", "OFF", "no", " No "):
        monkeypatch.setenv(cuda_graphs.ENV_VAR, off)
        assert not graphs_enabled("cuda")


def test_cpu_runner_has_no_graphs(artifact_path):
    from edgecmg.runtime import make_runner

    with make_runner(artifact_path, "torch", "cpu") as runner:
        runner.infer(np.zeros((1, 64, 64, 3), np.uint8))
        assert runner._graphs is None


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(), nn.Conv2d(16, 8, 3, stride=2)).cuda().eval()


@needs_cuda
@torch.inference_mode()
def test_replay_follows_new_inputs_and_matches_eager():
    net = _small_net()
    replay = GraphReplayer(lambda x: (net(x), x.mean(dim=(1, 2, 3))))
    for batch in (1, 3, 1):  # a second shape, then the first one again
        x = torch.randn(batch, 3, 32, 32, device="cuda")
        got = [t.clone() for t in replay(x)]
        torch.testing.assert_close(got[0], net(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got[1], x.mean(dim=(1, 2, 3)))
    assert len(replay) == 2  # one graph per shape, reused


@needs_cuda
@torch.inference_mode()
def test_a_function_that_syncs_with_the_host_runs_eagerly(caplog):
    net = _small_net()

    def syncing(x):
        y = net(x)
        if bool(torch.isnan(y).any()):  # a host read: not capturable
            raise ValueError("nan")
        return (y,)

    replay = GraphReplayer(syncing)
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with caplog.at_level("WARNING", logger="edgecmg"):
        out = replay(x)[0]
    torch.testing.assert_close(out, net(x), rtol=1e-4, atol=1e-5)
    assert len(replay) == 0 and "running it without graphs" in caplog.text


@needs_cuda
def test_cuda_runner_replays_graphs_and_agrees_with_eager(artifact_path, monkeypatch):
    from edgecmg.runtime import make_runner

    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    monkeypatch.setenv(cuda_graphs.ENV_VAR, "0")
    with make_runner(artifact_path, "torch", "cuda") as runner:
        eager = runner.infer(frames)
    monkeypatch.delenv(cuda_graphs.ENV_VAR)
    with make_runner(artifact_path, "torch", "cuda") as runner:
        first = runner.infer(frames)
        again = runner.infer(frames[::-1].copy())
        assert len(runner._graphs) == 1
    for name in eager:
        np.testing.assert_allclose(first[name], eager[name], rtol=1e-3, atol=1e-3 * np.abs(eager[name]).max())
    np.testing.assert_allclose(again["score"], first["score"][::-1], rtol=1e-3, atol=1e-3)

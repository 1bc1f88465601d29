"""edgecmg env on a GPU machine with Triton but without what its first launch compiles with (Python's
headers, a C compiler): it said the kernels ran, and the first frame failed in a gcc error."""
from __future__ import annotations

import pytest

from edgecmg.commands.env import triton_build_problem


def test_missing_python_headers_and_compiler_are_named(tmp_path):
    problem = triton_build_problem(str(tmp_path), None)
    assert problem == (f"this machine lacks Python's headers ({tmp_path}/Python.h) and a C compiler (gcc, or $CC)")
    (tmp_path / "Python.h").write_text("/* headers */\n")
    assert triton_build_problem(str(tmp_path), None) == "this machine lacks a C compiler (gcc, or $CC)"
    assert triton_build_problem(str(tmp_path), "/usr/bin/gcc") is None


def test_env_reports_it_on_a_gpu_machine_with_triton(tmp_path, monkeypatch):
    from edgecmg.commands import env
    from edgecmg.kernels import _common

    if not _common.triton_installed() or _common.too_old_triton():
        pytest.skip("Triton (new enough for the kernels) is not installed here")
    monkeypatch.setattr(env.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})  # a Python without headers
    problems = env._triton_problems(cuda=True)
    assert [p["fix"] for p in problems] == ["sudo apt install python3-dev build-essential (or set "
                                            "EDGECMG_KERNELS=torch)"]
    assert "Python.h" in problems[0]["problem"]
    assert env._triton_problems(cuda=False) == []  # no GPU: the kernels never launch compiled

"""edgecmg under Linux's default "fork" (multiprocessing's default start method to Python 3.13, prefork
servers): a child forked after its parent loaded, fitted or ran a model must be able to judge, close the
Detector and exit. It hung: torch's OpenMP pool and the runners' locks do not survive fork, and an ONNX
Runtime session made before the fork waited for ever for its thread pool when freed in the child."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")

CHILD = textwrap.dedent("""
    import os, sys, threading
    from edgecmg import Detector, read_image

    model, image, backend, how = sys.argv[1:5]
    det = Detector.load(model, backend=backend)
    frame = read_image(image)
    expected = det.predict(frame).score
    busy, judging = threading.Event(), None
    if how == "busy":  # another thread inside predict while the process forks (it held the runner's lock)
        def judge():
            while not busy.is_set():
                det.predict(frame)
        judging = threading.Thread(target=judge)
        judging.start()
    codes = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                worker = Detector.load(model, backend=backend) if how == "own" else det
                score = worker.predict(frame).score
                worker.close()
            except BaseException as exc:
                print("child:", repr(exc), file=sys.stderr, flush=True)
                os._exit(4)
            sys.exit(0 if abs(score - expected) <= 1e-3 * max(1.0, abs(expected)) else 3)  # a normal exit
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    busy.set()
    if judging is not None:
        judging.join()
    print(codes)
""")


def _run_forking(script_dir, *args: str) -> str:
    """The script's output; a hang is killed with every process it forked (its own session)."""
    script = script_dir / "forking.py"
    script.write_text(CHILD)
    process = subprocess.Popen([sys.executable, str(script), *args], cwd=script_dir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"a forked child hung ({' '.join(args[2:])})")
    assert process.returncode == 0, err
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("backend, how", [("torch", "shared"), ("torch", "own"), ("torch", "busy"),
                                          ("onnxruntime", "shared"), ("onnxruntime", "busy")])
def test_a_child_forked_after_the_parent_ran_a_model_judges_closes_and_exits(small_artifact, kolektor_train, tmp_path,
                                                                              backend, how):
    assert _run_forking(tmp_path, str(small_artifact), str(kolektor_train[0]), backend, how) == "[0, 0, 0]"

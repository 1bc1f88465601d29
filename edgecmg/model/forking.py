"""What a process forked from one where edgecmg ran torch needs to run torch at all.

GNU OpenMP, which torch's CPU build uses for its intra-op threads, does not survive fork: the child
gets the parent's thread pool without its threads, and its first parallel region waits for them for
ever. A parent that only loaded a model (artifact.load builds it with torch) or fitted one is enough;
a child that loads its own model hangs too (measured: every variant, torch 2.13, 2 cores). With one
thread torch never enters that pool, so the child runs, on one thread, as torch's own DataLoader
workers do. Programs that need more threads per worker start them with "spawn".
"""
from __future__ import annotations

import os

import torch

_ran_torch = False  # in this process (or the one it was forked from)


def note_torch_work() -> None:
    """Called where edgecmg runs torch (loading a model, fit): a child forked after it needs one thread."""
    global _ran_torch
    _ran_torch = True


def _one_thread_after_fork() -> None:
    if _ran_torch and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_one_thread_after_fork)

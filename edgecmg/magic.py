"""The first eight bytes of each file kind edgecmg writes, in a module of its own so that the readers
of every kind can tell one from another (a model given where an engine goes, a renamed file) without
importing each other: engine_file.py is above artifact.py, and imports no torch. Also the one way
their JSON headers are parsed."""
import json
import os
import stat
from typing import Any

ARTIFACT = b"EDGECMG\0"  # *.edgecmg, edgecmg.artifact
ENGINE = b"EDGECMGE"  # *.engine, edgecmg.engine_file
# The longest JSON header either kind may have (cpp/edgecmg_engine.hpp: kMaxHeaderBytes). A real one
# is a few KB (the held-out images' names make most of it); this stops a damaged or edited length from
# reading and hashing gigabytes before anything is checked, and no writer writes one a reader refuses.
MAX_HEADER_BYTES = 16 << 20


# A Git LFS pointer: the ~130-byte text a clone holds in a large file's place until `git lfs pull`.
GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def git_lfs_pointer(path: str | os.PathLike, first_bytes: bytes | None = None) -> str:
    """The sentence for a file that is a Git LFS pointer (its ``first_bytes``, read from ``path`` where
    not given), or "": a model or images kept in Git LFS and cloned without their files is refused as
    damaged otherwise ("bad magic b'version '"), which sends people copying the file again."""
    if first_bytes is None:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read (and lose its bytes)
                return ""
            with open(path, "rb") as handle:
                first_bytes = handle.read(len(GIT_LFS_POINTER))
        except OSError:
            return ""
    if not first_bytes.startswith(GIT_LFS_POINTER):
        return ""
    return (f"{path} is a Git LFS pointer, not the file itself: the repository was cloned or copied without its "
            "LFS files; fetch them (git lfs install, then git lfs pull in the clone) and use the file again")


def loads_header(text: str | bytes) -> Any:
    """A file header's JSON, refusing an object that names a key twice, at any depth (ValueError):
    json.loads keeps the last, so a second "threshold" would be read where a tool showing the first
    sees another. The readers do not check the same: the C++ engine reader (cpp/edgecmg_engine.hpp)
    refuses a repeated key only at the header's top level and in its "model" object, and validates no
    deeper JSON, where Python's readers check all of it and every field. Header checksums tell damage,
    not a deliberate edit that computes the checksum again."""
    return json.loads(text, object_pairs_hook=_one_value_per_key)


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out

"""Stop a make recipe before pip or pytest runs out of disk, with the numbers.

Usage: python tools/need_space.py GB WHAT [FOLDER]

Exits 0 where FOLDER's disk (default: the current folder) and the temporary folder's disk each have
GB gibibytes free, and 2 with a message naming the disk otherwise. Without it, a full disk shows up
as pip's "OSError: [Errno 28] No space left on device" half-way through an install (the CLIP
environment alone takes about 6.5 GB) or as a test that fails for no reason of its own.
Standard library only: it runs under the system Python before any environment exists.
"""

import os
import shutil
import sys
import tempfile

GIB = 2**30


def folders_to_check(folder):
    """The folder and the temporary folder (pip unpacks wheels there), once per disk."""
    checked, devices = [], set()
    for path in (folder, tempfile.gettempdir()):
        path = os.path.abspath(path)
        device = os.stat(path).st_dev
        if device not in devices:
            devices.add(device)
            checked.append(path)
    return checked


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    needed_gib, what = float(argv[0]), argv[1]
    folder = argv[2] if len(argv) == 3 else "."
    for path in folders_to_check(folder):
        free_gib = shutil.disk_usage(path).free / GIB
        if free_gib < needed_gib:
            print(
                f"{what} needs about {needed_gib:g} GB free on the disk of {path}; it has {free_gib:.1f} GB. "
                "Free some space there (or point TMPDIR at a disk with room, where the temporary "
                "folder is the one short) and run make again.",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

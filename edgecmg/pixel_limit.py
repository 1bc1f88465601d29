"""OpenCV's decode limit set to Pillow's, before anything imports cv2 (no heavy imports here).

``imageio`` refuses a file whose header declares more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` (179
megapixels by default) before decoding it, but only where Pillow parses the header: a format only
OpenCV reads (a Radiance HDR named .png) went to OpenCV's own limit of 1,074 megapixels, and a 12.5 MB
file of 196 megapixels took 4.7 GB to read. OpenCV takes its limit from the environment variable
``OPENCV_IO_MAX_IMAGE_PIXELS`` once, as cv2 loads (a static of its image codecs), so the package's
``__init__`` imports this module before any of its modules imports cv2.

The variable is set process-wide: the program's own use of cv2 and any child process it starts get the
same limit; to keep another (OpenCV's default of 2^30 pixels, say), set ``OPENCV_IO_MAX_IMAGE_PIXELS``
yourself before importing edgecmg, and it is left as it is. A file in a format Pillow parses and accepts
under ``PIL.Image.MAX_IMAGE_PIXELS`` as it is when read (a program may raise it after importing edgecmg)
but which OpenCV refuses by this limit is decoded with Pillow instead.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

#: The environment variable OpenCV reads the most pixels it decodes from (2^30 by default).
OPENCV_PIXEL_LIMIT_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
#: PIL.Image.MAX_IMAGE_PIXELS as Pillow ships it (1024**3 // 4 // 3), written out so that importing
#: edgecmg does not import Pillow.
_PILLOW_MAX_IMAGE_PIXELS = 89478485


def _limit_opencv_pixels() -> Optional[str]:
    """Set OpenCV's pixel limit to Pillow's refusal limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``, unless
    the environment sets one already (the user's is kept) or cv2 was loaded before edgecmg (too late:
    it read the variable then). Returns the limit OpenCV reads, as text, or None where it is not known.
    Child processes inherit the variable, and with it the same limit."""
    if "cv2" in sys.modules:
        return None
    # Pillow's own value where the program imported it first (and may have changed its limit)
    pillow_limit = getattr(sys.modules.get("PIL.Image"), "MAX_IMAGE_PIXELS", _PILLOW_MAX_IMAGE_PIXELS)
    if pillow_limit:  # None: Pillow's check turned off, and OpenCV is left its own
        os.environ.setdefault(OPENCV_PIXEL_LIMIT_VARIABLE, str(2 * int(pillow_limit)))
    return os.environ.get(OPENCV_PIXEL_LIMIT_VARIABLE)


#: The most pixels OpenCV decodes, as text, where it was set before cv2 loaded; None where not known.
OPENCV_PIXELS = _limit_opencv_pixels()

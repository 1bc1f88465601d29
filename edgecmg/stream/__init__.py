"""Model-agnostic streaming: frame sources, the capture/batching pipeline, latency reports.

``Detector.stream()`` is a thin wrapper over :class:`StreamPipeline`; ``edgecmg bench`` and
``edgecmg stream`` take their numbers from :mod:`edgecmg.stream.latency`, the machine from
:mod:`edgecmg.stream.environment`, and write with :mod:`edgecmg.stream.report` (files),
:mod:`edgecmg.stream.plot` and :mod:`edgecmg.stream.status_line`.

The names below are imported on first use, so that :mod:`edgecmg.stream.environment` (what ``edgecmg
env`` reads the machine with) imports without OpenCV, which the sources need: ``env`` can then say
that OpenCV is what fails to import.
"""
from typing import TYPE_CHECKING

from edgecmg.lazy import lazy_exports

# Type checkers and IDEs see the names; at run time __getattr__ imports them. "X as X" marks each as
# re-exported, for strict checkers (mypy --no-implicit-reexport).
if TYPE_CHECKING:
    from edgecmg.imageio import to_rgb_uint8 as to_rgb_uint8
    from edgecmg.stream.environment import environment_info as environment_info
    from edgecmg.stream.latency import LatencyStats as LatencyStats
    from edgecmg.stream.pipeline import StreamItem as StreamItem
    from edgecmg.stream.pipeline import StreamPipeline as StreamPipeline
    from edgecmg.stream.pipeline import StreamRun as StreamRun
    from edgecmg.stream.pipeline import StreamStats as StreamStats
    from edgecmg.stream.plot import plot_latency as plot_latency
    from edgecmg.stream.report import field_lines as field_lines
    from edgecmg.stream.report import markdown_table as markdown_table
    from edgecmg.stream.report import write_report as write_report
    from edgecmg.stream.sources import CaptureSource as CaptureSource
    from edgecmg.stream.sources import Frame as Frame
    from edgecmg.stream.sources import FrameSource as FrameSource
    from edgecmg.stream.sources import ImageFilesSource as ImageFilesSource
    from edgecmg.stream.sources import IterableSource as IterableSource
    from edgecmg.stream.sources import csi_pipeline as csi_pipeline
    from edgecmg.stream.sources import open_source as open_source
    from edgecmg.stream.status_line import LiveStatusLine as LiveStatusLine

# public name -> the module that defines it
_EXPORTS = {
    "StreamItem": "edgecmg.stream.pipeline",
    "StreamPipeline": "edgecmg.stream.pipeline",
    "StreamRun": "edgecmg.stream.pipeline",
    "StreamStats": "edgecmg.stream.pipeline",
    "LatencyStats": "edgecmg.stream.latency",
    "LiveStatusLine": "edgecmg.stream.status_line",
    "environment_info": "edgecmg.stream.environment",
    "field_lines": "edgecmg.stream.report",
    "markdown_table": "edgecmg.stream.report",
    "plot_latency": "edgecmg.stream.plot",
    "write_report": "edgecmg.stream.report",
    "CaptureSource": "edgecmg.stream.sources",
    "Frame": "edgecmg.stream.sources",
    "FrameSource": "edgecmg.stream.sources",
    "ImageFilesSource": "edgecmg.stream.sources",
    "IterableSource": "edgecmg.stream.sources",
    "csi_pipeline": "edgecmg.stream.sources",
    "open_source": "edgecmg.stream.sources",
    "to_rgb_uint8": "edgecmg.imageio",  # how sources normalise frames; Detector.stream takes any such frame
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

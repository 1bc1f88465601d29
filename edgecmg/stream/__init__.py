"""Model-agnostic streaming: frame sources, the capture/batching pipeline, latency reports.

``Detector.stream()`` is a thin wrapper over :class:`StreamPipeline`; ``edgecmg bench`` and
``edgecmg stream`` use :mod:`edgecmg.stream.report` for their numbers, files and plots.
"""
from edgecmg.stream.pipeline import StreamItem, StreamPipeline, StreamRun, StreamStats
from edgecmg.stream.report import (
    LatencyStats,
    LiveStatusLine,
    environment_info,
    markdown_table,
    plot_latency,
    write_report,
)
from edgecmg.stream.sources import (
    CaptureSource,
    Frame,
    FrameSource,
    ImageFilesSource,
    IterableSource,
    csi_pipeline,
    open_source,
    to_rgb_uint8,
)

__all__ = [
    "CaptureSource",
    "Frame",
    "FrameSource",
    "ImageFilesSource",
    "IterableSource",
    "LatencyStats",
    "LiveStatusLine",
    "StreamItem",
    "StreamPipeline",
    "StreamRun",
    "StreamStats",
    "csi_pipeline",
    "environment_info",
    "markdown_table",
    "open_source",
    "plot_latency",
    "to_rgb_uint8",
    "write_report",
]

"""Reading and writing media files: progressive video writers (`video`)."""

from .video import (
    FORMATS,
    SUFFIXES,
    OutputExistsError,
    VideoIOError,
    VideoWriter,
    count_frames,
    format_of,
    open_writer,
    read_frames,
    read_metadata,
    to_uint8_frames,
)

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "OutputExistsError",
    "VideoIOError",
    "VideoWriter",
    "count_frames",
    "format_of",
    "open_writer",
    "read_frames",
    "read_metadata",
    "to_uint8_frames",
]

"""The one error type of wmkit's video reading and writing."""

from __future__ import annotations

__all__ = ["VideoError"]


class VideoError(ValueError):
    """A video could not be read or written; the message names the file and the reason."""

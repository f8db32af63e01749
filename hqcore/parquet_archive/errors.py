"""The archive's exceptions: one root, short subclasses."""

from __future__ import annotations


class ArchiveError(Exception):
    """Root of every error the archive raises."""


class BadFileName(ArchiveError):
    """A file under the archive root is not named like an archive file."""


class NoSuchDay(ArchiveError):
    """The archive holds no data for the requested trade date."""

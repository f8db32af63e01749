"""Exceptions of the producers package (receiver and simulator)."""

from __future__ import annotations


class ProducersError(Exception):
    """Root of every error raised by producers/."""


class FeedAuthRejected(ProducersError):
    """The vendor rejected our token: a configuration error, never retried."""


class FeedConnectionLost(ProducersError):
    """The feed connection died (closed, reset, or silent past the heartbeat timeout)."""


class JournalError(ProducersError):
    """The on-disk journal could not be read or written."""

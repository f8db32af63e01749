"""The streams package's exceptions: one root, short documented subclasses.

:class:`BadRecord` carries a dead-letter reason (a :data:`schemas.dlq.DlqReason`
literal) and a short human detail; the DLQ writer turns it into headers.
A detail names the field and the offending value (truncated) and must never
contain secrets.
"""

from __future__ import annotations

from schemas.dlq import DlqReason


class StreamsError(Exception):
    """Root of every error raised by the streams package."""


class BadRecord(StreamsError):
    """A feed record that cannot be parsed or is impossible; it goes to the DLQ."""

    def __init__(self, reason: DlqReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DlqReason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[BadRecord], tuple[DlqReason, str]]:
        return (BadRecord, (self.reason, self.detail))

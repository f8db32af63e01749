"""Static group membership (KIP-345) that still leaves the group on a clean stop.

A worker with ``HQ_STREAMS_GROUP_INSTANCE_ID`` is a *static* member: when it
dies and a replacement with the same instance id joins, the coordinator hands
the replacement the dead member's partitions at once, without waiting for the
dead member's session to expire and without a rebalance of the others. That
is the case of a container restarted in its pod, or of the replacement
started while the broker was down, which joins the moment the broker is back
(the coordinator gave every member it reloaded a fresh session).

aiokafka 0.14 knows LeaveGroup only up to v1, which cannot name an instance,
so it sends no LeaveGroup for a static member: every clean stop (a rolling
update, a scale-down) then held that worker's partitions for the whole session
timeout. :func:`install` makes aiokafka's coordinator send LeaveGroup v3 (Kafka
2.4+), which names the member by its instance id, as the Java client does on
``close()``: a clean stop hands the partitions over at once, as a dynamic
member's does.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

logger = logging.getLogger(__name__)


class LeaveGroupResponse_v3(Response):  # type: ignore[misc]  # aiokafka: untyped, its names
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(("member_id", String("utf-8")),
                          ("group_instance_id", String("utf-8")),
                          ("error_code", Int16))),
    )  # fmt: skip


class LeaveGroupRequest_v3(RequestStruct):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponse_v3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")),
                          ("group_instance_id", String("utf-8")))),
    )  # fmt: skip


class StaticLeaveGroup(Request[LeaveGroupRequest_v3]):  # type: ignore[misc]
    """LeaveGroup for one static member (v3: the first version naming instances)."""

    API_KEY = 13

    def __init__(self, group_id: str, member_id: str, group_instance_id: str) -> None:
        self._group_id = group_id
        self._member = (member_id, group_instance_id)

    def build(self, request_struct_class: type[LeaveGroupRequest_v3]) -> LeaveGroupRequest_v3:
        return request_struct_class(self._group_id, [self._member])


def leave_error(response: Any) -> int:
    """The response's error code: the request's, else the first member's (0: none)."""
    if response.error_code:
        return int(response.error_code)
    return next((int(code) for _, _, code in response.members if code), 0)


_dynamic_leave = GroupCoordinator._maybe_leave_group


async def _maybe_leave_group(self: GroupCoordinator) -> None:
    """aiokafka's leave, which skips static members; for them, LeaveGroup v3.

    Best effort, like aiokafka's: a failure is logged, never retried; the
    member's session then expires on its own.
    """
    instance_id = self._group_instance_id
    if instance_id is None or self.generation <= 0:
        await _dynamic_leave(self)
        return
    try:
        leave = StaticLeaveGroup(self.group_id, self.member_id, instance_id)
        response = await self._send_req(leave)
        code = leave_error(response)
        if code:
            raise errors.for_code(code)()
    except (errors.KafkaError, NotImplementedError) as exc:  # NotImplemented: broker < 2.4
        logger.warning("static member %s could not leave group %s (its partitions wait for "
                       "its session to expire): %r", instance_id, self.group_id, exc)  # fmt: skip
    else:
        logger.info("static member %s left group %s", instance_id, self.group_id)
    self.reset_generation()


def install() -> None:
    """Make every aiokafka consumer of this process leave as a static member too."""
    GroupCoordinator._maybe_leave_group = _maybe_leave_group  # type: ignore[method-assign]

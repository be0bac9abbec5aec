"""The reply envelope: every RoleReply starts as the copy of its task's identity (task, problem, role, turn,
round, index, persona), whoever builds it: a role, the role service's error path, or the CEO for a reply
that never came."""

from __future__ import annotations

from typing import Any

from conclave.v1 import agents_pb2


def reply_to(task: agents_pb2.RoleTask, **fields: Any) -> agents_pb2.RoleReply:
    """A reply to `task` with `fields` set (role defaults to the task's)."""
    fields.setdefault("role", task.role)
    return agents_pb2.RoleReply(task_id=task.task_id, problem_id=task.problem_id, turn=task.turn,
                                round=task.round, index=task.index, persona=task.persona, **fields)

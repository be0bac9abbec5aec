"""The bus with security on (the default): TLS, one user per role, least privilege. Real nats-server with the
config `conclave up` generates (services/stack/natsd.py from services/bus/permissions.py)."""

from __future__ import annotations

import asyncio
import stat

import nats
import pytest
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import permissions, subjects, topology
from services.bus.replies import answer
from services.runtime.connection import tls_context
from services.security.local import LocalSecurity
from tests.conftest import FAST


class Errors:
    """Collects the asynchronous errors (permission violations) the server sends a connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def cb(self, err: Exception) -> None:
        self.seen.append(str(err).lower())

    def violations(self) -> list[str]:
        return [e for e in self.seen if "permissions violation" in e]


async def connect_as(nats_server, user: str, errors: Errors | None = None) -> nats.NATS:
    return await nats.connect(nats_server.url, error_cb=(errors or Errors()).cb, allow_reconnect=False,
                              **nats_server.connect_options(user))


async def refused(nats_server, **kwargs) -> None:
    with pytest.raises((NatsError, OSError)):
        nc = await nats.connect(nats_server.url, connect_timeout=3, allow_reconnect=False,
                                max_reconnect_attempts=0, error_cb=Errors().cb, **kwargs)
        await nc.close()


async def test_a_plaintext_client_is_refused_even_with_a_valid_password(nats_server, security):
    await refused(nats_server)
    await refused(nats_server, **_password(security, permissions.CLIENT))


async def test_a_tls_client_without_credentials_or_with_a_wrong_password_is_refused(nats_server, security):
    ctx = tls_context(security.ca_file)
    await refused(nats_server, tls=ctx)
    await refused(nats_server, tls=ctx, user="critic", password="not-the-password")
    # A certificate from another CA is not trusted by the client: no downgrade to an unverified server.
    other = LocalSecurity.ensure(security.root.parent / "other-ca")
    await refused(nats_server, tls=tls_context(other.ca_file), **_password(security, "critic"))


def _password(security: LocalSecurity, user: str) -> dict[str, str]:
    cred = security.nats_credential(user)
    return {"user": cred.user, "password": cred.password}


async def test_a_critic_cannot_publish_a_result_and_nothing_lands(nats_server, nc, bus):
    errors = Errors()
    critic = await connect_as(nats_server, "critic", errors)
    try:
        await critic.publish(subjects.result("p1"), b"forged")
        await critic.publish(subjects.PROBLEMS_ACCEPTED, b"forged")
        await critic.publish(f"$KV.{topology.PROBLEM_STATE.bucket}.p1", b"forged")
        await critic.flush()
        await _until(lambda: len(errors.violations()) >= 3)
    finally:
        await critic.close()
    for stream in (topology.RESULTS.name, topology.PROBLEMS.name, f"KV_{topology.PROBLEM_STATE.bucket}"):
        assert (await bus.stream_info(stream)).state.messages == 0, stream


async def test_a_solver_cannot_delete_the_kv_bucket_or_purge_a_stream(nats_server, bus):
    errors = Errors()
    solver = await connect_as(nats_server, "solver", errors)
    js = solver.jetstream(timeout=2)
    try:
        with pytest.raises(NatsTimeoutError):
            await js.delete_key_value(topology.PROBLEM_STATE.bucket)
        with pytest.raises(NatsTimeoutError):
            await js.purge_stream(topology.TASKS.name)
        with pytest.raises(NatsTimeoutError):
            await js.delete_stream(topology.REPLIES.name)
    finally:
        await solver.close()
    assert any("stream.delete" in v for v in errors.violations())
    assert await bus.key_value(topology.PROBLEM_STATE.bucket)
    assert (await bus.stream_info(topology.REPLIES.name)).config.name == topology.REPLIES.name


async def test_the_public_client_can_submit_and_read_results_but_nothing_else(nats_server, nc, bus):
    errors = Errors()
    client = await connect_as(nats_server, permissions.CLIENT, errors)
    js = client.jetstream(timeout=2)
    try:
        # What it may: read a result (stored by the CEO; here by the admin) and watch events.
        await bus.publish(subjects.result("p1"), outcome_pb2.Result(problem_id="p1", status="ok").SerializeToString())
        for direct in (True, False):  # solve() reads directly; the nats CLI and older programs through the API
            got = await js.get_last_msg(topology.RESULTS.name, subjects.result("p1"), direct=direct)
            assert outcome_pb2.Result.FromString(got.data).status == "ok"
        events = await client.subscribe(subjects.event("p1"))
        # What it must not: purge a stream, skip the intake, read tasks or another user's inbox.
        with pytest.raises(NatsTimeoutError):
            await js.purge_stream(topology.PROBLEMS.name)
        with pytest.raises(NatsTimeoutError):  # another stream's messages (the team's trajectories)
            await js.get_last_msg(topology.TRAJECTORIES.name, subjects.trajectory("p1"), direct=True)
        await client.publish(subjects.PROBLEMS_ACCEPTED, problem_pb2.Problem(id="x").SerializeToString())
        await client.subscribe(f"{subjects.TASKS_PREFIX}.>")
        await client.subscribe(f"{permissions.inbox_prefix(permissions.ADMIN)}.>")
        await client.flush()
        await _until(lambda: len(errors.violations()) >= 4)
        await events.unsubscribe()
    finally:
        await client.close()
    assert (await bus.stream_info(topology.PROBLEMS.name)).state.messages == 0


async def test_a_role_can_answer_only_its_own_steps(nats_server, bus):
    errors = Errors()
    critic = await connect_as(nats_server, "critic", errors)
    try:
        await critic.jetstream().publish(subjects.reply("p3", "t1-r0-critic-1"), b"my review")
        await critic.publish(subjects.reply("p3", "t1-r0-solver-0"), b"forged solution")
        await critic.flush()
        await _until(lambda: len(errors.violations()) >= 1)
    finally:
        await critic.close()
    info = await bus.stream_info(topology.REPLIES.name, subjects_filter=f"{subjects.REPLIES_PREFIX}.>")
    assert set(info.state.subjects or {}) == {subjects.reply("p3", "t1-r0-critic-1")}


def test_the_ceo_believes_a_reply_only_on_its_steps_subject():
    """A critic's own subject carrying a payload that claims the solver's step is not the solver's reply."""
    own = subjects.reply("p4", "t1-r0-critic-0")
    assert own == "conclave.replies.p4.critic.t1-r0-critic-0"
    assert subjects.reply_is_genuine(own, "p4", "t1-r0-critic-0")
    assert not subjects.reply_is_genuine(own, "p4", "t1-r0-solver-0")
    assert not subjects.reply_is_genuine(own, "p5", "t1-r0-critic-0")


async def test_a_crafted_reply_subject_is_not_answered(nats_server, nc, bus):
    """A submitter picks its reply subject; the CEO answers inboxes only, never a stream subject."""
    ceo = await connect_as(nats_server, "ceo")
    try:
        result = outcome_pb2.Result(problem_id="p2", status="ok")
        await answer(ceo, subjects.result("victim"), result)
        await ceo.flush()
    finally:
        await ceo.close()
    assert (await bus.stream_info(topology.RESULTS.name)).state.messages == 0


async def test_a_service_registers_for_discovery_without_a_permission_violation(nats_server, bus):
    """Micro discovery ($SRV.*) and the service's `work` endpoint are within its permissions."""
    from services.intake.service import IntakeService, IntakeSettings
    from services.runtime.lifecycle import run

    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(IntakeService(IntakeSettings(**nats_server.settings_kwargs(), declare_bus=False)),
                                   stop=stop, started=started))
    try:
        await asyncio.wait_for(started.wait(), 15)
        # nats-server logs every refused publish or subscription ("Publish/Subscription Violation").
        log = nats_server.log_file.read_text() if nats_server.log_file else ""
        assert "Violation" not in log, log[-2000:]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_services_check_the_declared_bus_but_only_admin_may_create_it(nats_server):
    errors = Errors()
    intake = await connect_as(nats_server, "intake", errors)
    try:
        with pytest.raises(NatsTimeoutError):
            await topology.declare(intake.jetstream(timeout=2), FAST)
    finally:
        await intake.close()
    assert any("stream.create" in v for v in errors.violations())


def test_the_declaration_keeps_admin_rights_to_the_admin():
    """One place says who may do what; check its promises rather than trust them."""
    admin_only = ("$JS.API.STREAM.CREATE", "$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE",
                  "$JS.API.STREAM.UPDATE", "$JS.API.CONSUMER.CREATE", "$JS.API.CONSUMER.DELETE")
    for user, perm in permissions.USERS.items():
        if user == permissions.ADMIN:
            assert perm.unrestricted
            continue
        for subject in perm.publish:
            assert not subject.startswith(admin_only) and subject != ">", (user, subject)
            assert not subject.startswith("$JS.API.>") and subject not in ("$JS.>", "$JS.API.*"), (user, subject)
    publishers = {u for u, p in permissions.USERS.items() if subjects.PROBLEMS_ACCEPTED in p.publish}
    assert publishers == {"intake"}
    result_writers = {u for u, p in permissions.USERS.items() if f"{subjects.RESULTS_PREFIX}.*" in p.publish}
    assert result_writers == {"ceo"}
    kv_writers = {u for u, p in permissions.USERS.items() if f"$KV.{topology.PROBLEM_STATE.bucket}.>" in p.publish}
    assert kv_writers == {"ceo"}
    assert set(permissions.get(permissions.CLIENT).publish) == {
        subjects.PROBLEMS_SUBMIT, f"$JS.API.DIRECT.GET.{topology.RESULTS.name}.>",
        f"$JS.API.STREAM.MSG.GET.{topology.RESULTS.name}"}


def test_keys_and_passwords_are_private(security):
    private = [security.root / "ca.key", security.cert("nats-server")[1], security.pod_api_key_file,
               *security.nats_dir.glob("*.json")]
    assert len(private) > len(permissions.USERS)
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(security.root.stat().st_mode) == 0o700


def test_a_second_ensure_changes_nothing(security):
    before = {p: p.read_bytes() for p in security.root.rglob("*") if p.is_file()}
    LocalSecurity.ensure(security.root)
    assert {p: p.read_bytes() for p in security.root.rglob("*") if p.is_file()} == before


async def _until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)

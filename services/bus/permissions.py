"""Who may publish and subscribe to what on the bus: the one declaration of least privilege.

Every NATS user Conclave knows is declared here, with exactly the subjects it needs, including the
`$JS.API` subjects of the JetStream operations it performs. `conclave up` (services/stack/natsd.py) and the
Kubernetes config (deploy/k8s/base/nats-auth.conf, checked against this module by tests/test_deploy.py)
are generated from it; the server enforces it (NATS users with permissions). What no rule allows is denied.

JetStream operations map to subjects like this (nats-py, nats-server 2.10+):
- publishing into a stream: the stream's subject (the ack comes back on the publisher's inbox);
- pulling from a durable: `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`; acking: `$JS.ACK.<stream>.<durable>.>`;
- reading one message: through the API `$JS.API.STREAM.MSG.GET.<stream>` (the stream's leader answers: the
  dead-letter watcher, and the stack's look-ups that decide what to do next); a client's look-up of the last one
  on a subject `$JS.API.DIRECT.GET.<stream>.<subject>` (a direct get, served by any replica itself, not queued
  behind the JetStream API: under a vote's burst the API left look-ups unanswered for their whole timeout);
- KV: put/create/update publish to `$KV.<bucket>.<key>`; get is a direct get on `KV_<bucket>`;
- creating, updating, purging or deleting streams, consumers and buckets: `$JS.API.STREAM.CREATE/UPDATE/
  PURGE/DELETE.*`, `$JS.API.CONSUMER.CREATE/DELETE.*`: only the `admin` user (bus declaration) has them.

Each user gets its own inbox prefix (`_INBOX.<user>`), so no user can read another's replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.bus import subjects, topology
from services.protocol.roles import WORKER_ROLES

ADMIN = "admin"
# The credential a user's own program (and `conclave solve/submit`) uses: submit problems, read results.
CLIENT = "client"


def inbox_prefix(user: str) -> str:
    return f"{subjects.INBOX_PREFIX}.{user}"


@dataclass(frozen=True)
class Permissions:
    user: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    # Lets a service answer requests it received (NATS `allow_responses`): micro discovery PING/INFO/STATS and
    # the intake's answer to a submitter, without a publish right on every inbox.
    allow_responses: bool = False
    # The admin has no permissions block at all: everything is allowed.
    unrestricted: bool = False
    help: str = ""


def _pull(spec: topology.ConsumerSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Publish and subscribe rights of a JetStream worker on `spec` (see services/runtime/worker.py), with
    the max-deliveries watcher that moves exhausted messages to the dead-letter stream."""
    s = spec.stream
    pub = (
        f"$JS.API.CONSUMER.MSG.NEXT.{s}.{spec.durable}",
        f"$JS.ACK.{s}.{spec.durable}.>",
        f"$JS.API.STREAM.MSG.GET.{s}",
        f"$JS.API.STREAM.MSG.DELETE.{s}",
        subjects.deadletter(s),
    )
    # The watcher listens to the whole stream's advisories (one queue group per stream, services/bus/deadletter.py).
    sub = (subjects.max_deliveries_advisory(s),)
    return pub, sub


def _read(stream: topology.StreamSpec) -> str:
    """The right to read the last message on any of the stream's subjects by a direct get (services/bus/lookup.py)."""
    return f"$JS.API.DIRECT.GET.{stream.name}.>"


def _read_from_leader(stream: topology.StreamSpec) -> str:
    """The right to read a message through the API, which the stream's leader answers (lookup's `leader`)."""
    return f"$JS.API.STREAM.MSG.GET.{stream.name}"


def _kv(bucket: topology.BucketSpec) -> tuple[str, ...]:
    stream = f"KV_{bucket.bucket}"
    return (f"$KV.{bucket.bucket}.>", f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}")


def _service(user: str, publish: tuple[str, ...], subscribe: tuple[str, ...], help: str) -> Permissions:
    """What every Conclave service needs besides its own work: check the declared topology at start-up (read
    only), answer micro discovery, receive replies on its own inbox."""
    common_pub = ("$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.*", subjects.deadletter("core"))
    common_sub = (f"{inbox_prefix(user)}.>", f"{subjects.SERVICE_PREFIX}.>", subjects.work(user))
    return Permissions(user=user, publish=common_pub + publish, subscribe=common_sub + subscribe,
                       allow_responses=True, help=help)


def _worker(role: str) -> Permissions:
    pub, sub = _pull(topology.ROLE_CONSUMERS[role])
    # Replies go to conclave.replies.<problem>.<role>.<step>: a role can only answer its own steps, and the CEO
    # believes a reply only on its step's subject (subjects.reply_is_genuine).
    # A redelivered task first looks for its stored reply (services/agents/service.py).
    pub += (f"{subjects.REPLIES_PREFIX}.*.{role}.*", _read_from_leader(topology.REPLIES))
    return _service(role, pub, sub,
                    f"consumes {subjects.task(role)}, publishes its replies")


# What a submitter may do: submit, read a stored result, watch results and progress events.
# Both ways of reading a result: a direct get (services/client/solve.py) and the API's, which the nats CLI's
# `nats stream get` and programs written before the direct get use; both read only RESULTS.
CLIENT_PUBLISH = (subjects.PROBLEMS_SUBMIT, _read(topology.RESULTS), _read_from_leader(topology.RESULTS))
CLIENT_SUBSCRIBE = (f"{subjects.RESULTS_PREFIX}.*", f"{subjects.EVENTS_PREFIX}.*")


def _declare() -> dict[str, Permissions]:
    users: list[Permissions] = [
        Permissions(ADMIN, unrestricted=True,
                    help="declares streams, consumers and buckets (conclave up, the bus-setup Job); operators"),
        Permissions(
            CLIENT,
            publish=CLIENT_PUBLISH,
            subscribe=(f"{inbox_prefix(CLIENT)}.>", *CLIENT_SUBSCRIBE),
            help="a user's program: submits problems, reads results and progress events",
        ),
        _service(
            "intake",
            # Rejections are answered on the submitter's inbox (allow_responses) and dead-lettered, never stored
            # as a result.
            (subjects.PROBLEMS_ACCEPTED, f"{subjects.EVENTS_PREFIX}.*"),
            (subjects.PROBLEMS_SUBMIT,),
            "validates submissions; the only publisher into PROBLEMS",
        ),
    ]
    ceo_pub, ceo_sub = _pull(topology.CEO_CONSUMER)
    users.append(_service(
        "ceo",
        ceo_pub + (
            f"{subjects.TASKS_PREFIX}.*", f"{subjects.RESULTS_PREFIX}.*", f"{subjects.EVENTS_PREFIX}.*",
            f"{subjects.TRAJECTORIES_PREFIX}.*", _read_from_leader(topology.REPLIES),
            # A resumed problem looks for its result first (ceo/loop.py).
            _read_from_leader(topology.RESULTS),
            # The submitter's reply subject, kept in the problem's headers; services/bus/replies.py answers
            # only inboxes, so a crafted reply subject cannot make the CEO publish elsewhere.
            f"{subjects.INBOX_PREFIX}.>",
        # Problem state; the token ledger, where the CEO opens each problem's ceiling (ceo/loop.py).
        ) + _kv(topology.PROBLEM_STATE) + _kv(topology.TOKEN_LEDGER),
        ceo_sub + (f"{subjects.REPLIES_PREFIX}.>",),
        "runs problems: the only writer of tasks, results, trajectories and problem state",
    ))
    users += [_worker(role) for role in WORKER_ROLES]
    arch_pub, arch_sub = _pull(topology.ARCHIVER_CONSUMER)
    users.append(_service("archiver", arch_pub, arch_sub, "consumes trajectories into the archive"))
    users.append(_service("inference", _kv(topology.TOKEN_LEDGER), (), "the gateway: token ledger only"))
    # The OpenAI-compatible door submits problems and waits for their results, as a user's program does.
    users.append(_service("openai-door", CLIENT_PUBLISH, CLIENT_SUBSCRIBE, "the OpenAI-compatible HTTP door"))
    return {p.user: p for p in users}


USERS: dict[str, Permissions] = _declare()
SERVICE_USERS: tuple[str, ...] = tuple(u for u in USERS if u not in (ADMIN, CLIENT))


def get(user: str) -> Permissions:
    try:
        return USERS[user]
    except KeyError:
        raise KeyError(f"no NATS user {user!r}; known: {', '.join(USERS)}") from None


def password_env(user: str) -> str:
    """The environment variable through which nats-server reads `user`'s password in Kubernetes."""
    return f"{user.upper().replace('-', '_')}_PASSWORD"


def _quote(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def user_block(p: Permissions, password: str) -> str:
    """One entry of the server's `authorization.users` list. `password` is a literal or `$VAR` (an
    environment variable the server resolves, as in Kubernetes)."""
    pw = password if password.startswith("$") else f'"{password}"'
    lines = [f'    {{ user: "{p.user}", password: {pw}']
    if not p.unrestricted:
        perm = [f"        publish: {{ allow: {_quote(p.publish)} }}",
                f"        subscribe: {{ allow: {_quote(p.subscribe)} }}"]
        if p.allow_responses:
            perm.append("        allow_responses: true")
        lines[0] += ", permissions: {"
        lines += perm + ["      }"]
    lines.append("    }")
    return "\n".join(lines)


def authorization_conf(passwords: dict[str, str]) -> str:
    """The server's `authorization` block for every user in `passwords` (user -> password or `$VAR`)."""
    blocks = ",\n".join(user_block(get(u), pw) for u, pw in passwords.items())
    return f"authorization {{\n  users: [\n{blocks}\n  ]\n}}\n"

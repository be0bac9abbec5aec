"""Whether NATS answers at a URL: asked without leaving an error in the server's log, and told apart from any
other listener on the port."""

from __future__ import annotations

import socket
import threading
import time

from services.stack.natsd import free_port, nats_answers, reachable


def errors_in(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if "[ERR]" in line]


def test_probing_a_tls_server_leaves_no_error_in_its_log_where_a_bare_connect_leaves_one(nats_server):
    log = nats_server.log_file
    assert errors_in(log) == []  # the server's own start-up wait probed it too
    for _ in range(3):
        assert nats_answers(nats_server.url)
    time.sleep(0.3)
    assert errors_in(log) == []
    # What every `conclave eval` and `conclave up` used to do: connect and close before the TLS handshake.
    assert reachable(nats_server.url)
    deadline = time.monotonic() + 5
    while not errors_in(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "TLS handshake error" in errors_in(log)[0]  # EOF, or a reset when the INFO was left unread


def test_a_listener_that_is_not_nats_does_not_count_as_an_answer():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
        started = time.monotonic()
        assert not nats_answers(url, timeout=0.5)  # it accepts, but never says INFO
        assert time.monotonic() - started < 3
        assert reachable(url)
        for conn in accepted:
            conn.close()


def test_a_closed_port_answers_nothing():
    url = f"nats://127.0.0.1:{free_port()}"
    assert not nats_answers(url) and not reachable(url)

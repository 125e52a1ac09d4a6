"""Ports for the servers the local stack, the tests and the bench start."""

from __future__ import annotations

import socket

import pytest

from deploy.local import procs
from deploy.local.procs import free_port, listening_ports


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_given_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    # Outgoing connections draw their source ports from the ephemeral range, so a port
    # there can be taken between the check and the server's bind.
    assert all(port in listening_ports() for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # and it is free to listen on


def free_window(size: int) -> range:
    """``size`` consecutive ports of the listening range that are free now: servers other
    tests started (the broker, the database, services) hold ports anywhere in it."""
    ports = listening_ports()
    start = ports.start
    while start + size <= ports.stop:
        for port in range(start, start + size):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    start = port + 1
                    break
        else:
            return range(start, start + size)
    pytest.fail(f"no {size} free ports in a row in {ports}")


def test_ports_in_use_are_skipped_until_none_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    window = free_window(20)
    monkeypatch.setattr(procs, "listening_ports", lambda: window)
    monkeypatch.setattr(procs, "_given", set())
    servers = []
    try:
        for port in window[:15]:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            servers.append(server)
            server.bind(("127.0.0.1", port))
            server.listen()
        given = [free_port() for _ in range(5)]
        assert sorted(given) == list(window[15:])
        # Every port of the range in use or given: any free port the kernel offers.
        assert free_port() not in window
    finally:
        for server in servers:
            server.close()

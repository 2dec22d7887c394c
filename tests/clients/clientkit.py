"""Small helpers shared by the client tests."""

import socket


def unused_port() -> int:
    """A local port nothing listens on (bound and released): a dead server's address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

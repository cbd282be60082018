"""Byte relays between sockets, for putting a proxy, a TLS front or a late-opening port before the local
OpenRouter."""

from __future__ import annotations

import contextlib
import socket


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side ends, then end both, so that the pump running the other way
    (blocked reading ``dst``) wakes and ends too."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

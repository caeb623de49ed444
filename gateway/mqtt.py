"""aiomqtt's client, with one race of aiomqtt 2.5.1 closed; use it wherever aiomqtt.Client
would be used (the gateway's uplink, the fleet's ingest, tests' subscribers). aiomqtt 2 has no
reconnect of its own: :class:`Backoff` paces the reconnect loops around it."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiomqtt
import paho.mqtt.client as paho


class Client(aiomqtt.Client):
    """aiomqtt 2.5.1's client with its write registration made safe against a closed socket.

    paho asks for write readiness (``on_socket_register_write``) whenever it queues a packet;
    aiomqtt defers ``loop.add_writer(fd)`` with ``call_soon_threadsafe``. When the connection
    drops in the same loop iteration (the reader sees EOF, or a disconnect), paho closes the
    socket first and the deferred ``add_writer`` then fails with "Bad file descriptor" in the
    event loop's exception handler; worse, if the fd number was reused meanwhile (a Modbus TCP
    socket, the next broker connection), it installs the dead client's writer on someone
    else's file descriptor, which then spins. Here the registration happens only if the socket
    is still the client's current one when the loop gets to it.
    """

    def _on_socket_register_write(
        self,
        client: paho.Client,
        userdata: Any,
        sock: Any,
    ) -> None:
        def writable() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # aiomqtt's own rule: any error means the connection is gone
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            current = client.socket()
            if current is not None and current is sock:
                self._loop.add_writer(current.fileno(), writable)

        # paho calls this from the loop's own thread on every publish (aiomqtt runs paho's
        # I/O there): plain call_soon then, which does not write to the loop's self-pipe.
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # another thread
            on_loop = False
        if on_loop:
            self._loop.call_soon(register)
        else:
            self._loop.call_soon_threadsafe(register)


class Backoff:
    """Jittered exponential back-off: the n-th delay is uniform in ``[c/2, c]`` with
    ``c = min(most, first * 2**n)``, so gateways that lost the broker together do not all
    come back in the same instant."""

    def __init__(self, first: float, most: float) -> None:
        self._first = first
        self._most = most
        self._n = 0

    def next(self) -> float:
        ceiling = min(self._most, self._first * 2**self._n)
        self._n = min(self._n + 1, 62)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not secrets)

    def reset(self) -> None:
        self._n = 0

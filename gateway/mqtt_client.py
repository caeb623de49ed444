"""aiomqtt's client, with one race of aiomqtt 2.5.1 closed; use it wherever aiomqtt.Client
would be used (the gateway's uplink, the fleet's ingest, tests' subscribers)."""

from __future__ import annotations

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

        self._loop.call_soon_threadsafe(register)

"""A real HTTP server on 127.0.0.1 serving one file with Range, that can cut a response."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    data: bytes
    token: str = "tok"
    cut_at: float | None = None  # close the first full response after this share of the file
    sent: list[int] = field(default_factory=list)  # bytes written per request
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""


@contextmanager
def serve(served: Served) -> Iterator[Served]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {served.token}":
                self.send_error(403)
                return
            asked = self.headers.get("Range")
            served.ranges.append(asked)
            start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
            body = served.data[start:]
            self.send_response(206 if asked else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.cut_at is not None:
                body = body[: int(len(served.data) * served.cut_at) - start]
                served.cut_at = None
                self.close_connection = True
            self.wfile.write(body)
            served.sent.append(len(body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}/bundle"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()

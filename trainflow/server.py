"""Serving the app under gevent: one process by default, pre-forked workers on request.

Long-lived streams need thousands of idle connections per process, which gevent's pywsgi
holds cheaply. The listening socket has TCP_NODELAY, which accepted sockets inherit: without
it each keep-alive response waits ~40 ms on Nagle's algorithm against the client's delayed ACK.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.settings import Settings

log = logging.getLogger("trainflow.server")
HANDLER_KEY = "trainflow.handler"  # the WSGI environ entry holding pywsgi's connection handler


def _early_error(status: str, code: str, message: str) -> bytes:
    from trainflow.errors import error_body

    body = json.dumps(error_body(int(status.split()[0]), code, message)).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


# Answers pywsgi writes before the app sees the request (the whole response, headers included).
EARLY_ERRORS = {
    "414": _early_error(
        "414 URI Too Long",
        "uri_too_long",
        "The request line is longer than 8 KB; send long values in a POST body.",
    ),
    "400": _early_error("400 Bad Request", "bad_request", "The request line is not valid HTTP."),
}


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def make_server(sock: socket.socket, app: Flask):  # type: ignore[no-untyped-def]
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class QuietHandler(WSGIHandler):  # type: ignore[misc]
        def get_environ(self):  # type: ignore[no-untyped-def]
            # Event streams write to a caught-up follower's socket from one loop
            # (trainflow.events.hub), past the WSGI write path, once the headers are out.
            environ = super().get_environ()
            environ[HANDLER_KEY] = self
            return environ

        def handle_one_request(self):  # type: ignore[no-untyped-def]
            # pywsgi answers a request line over 8 KB (414) or one it cannot parse (400) itself,
            # before the app, with an empty untyped body: give those the API's JSON error shape.
            result = super().handle_one_request()
            if isinstance(result, tuple) and result[0] in EARLY_ERRORS:
                return result[0], EARLY_ERRORS[result[0]]
            return result

        def log_request(self) -> None:
            # pywsgi's access log prints the full request line; trainflow logs its own lines
            # and never a URL's query string, which may carry whatever a client put there.
            status = (self.status or "000")[:3] if isinstance(self.status, str) else "000"
            log.debug("%s %s %s", self.command, self.path.split("?", 1)[0] if self.path else "", status)

    return WSGIServer(sock, app, handler_class=QuietHandler, log=None, error_log=log)


def serve(app_factory, settings: Settings, on_ready=None) -> None:  # type: ignore[no-untyped-def]
    """Bind, then serve ``app_factory(slot)`` in ``settings.workers`` processes until SIGTERM/SIGINT."""
    sock = listen(settings.host, settings.port)
    if on_ready is not None:
        on_ready(sock)
    if settings.workers <= 1 or not hasattr(os, "fork"):
        _serve_one(sock, app_factory(0))
        return
    children: dict[int, int] = {}

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _serve_one(sock, app_factory(slot))
            os._exit(0)
        children[pid] = slot

    for slot in range(settings.workers):
        spawn(slot)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, None)
        if slot is not None and not stopping:
            log.warning("Worker %d exited (status %d); starting another.", pid, status)
            spawn(slot)


def _serve_one(sock: socket.socket, app: Flask) -> None:
    import gevent

    server = make_server(sock, app)

    def shutdown(*_: object) -> None:
        server.stop(timeout=5)

    gevent.signal_handler(signal.SIGTERM, shutdown)
    gevent.signal_handler(signal.SIGINT, shutdown)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()

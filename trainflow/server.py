"""Serving the app under gevent: one process by default, pre-forked workers on request.

Long-lived streams need thousands of idle connections per process, which gevent's pywsgi
holds cheaply. The listening socket has TCP_NODELAY, which accepted sockets inherit: without
it each keep-alive response waits ~40 ms on Nagle's algorithm against the client's delayed ACK.

pywsgi itself never times a client out. Here every read from a client has the read timeout
(``TRAINFLOW_READ_TIMEOUT_SECONDS``: the request line and headers together, each read of the body) and
the wait for a kept-alive connection's next request has the idle timeout; neither cuts a
response being written (an event stream). Each write has the write timeout: a client that
takes nothing of a response for that long is disconnected. A body that stalls ends
with a JSON 408 (the app sees werkzeug's ``RequestTimeout`` from ``wsgi.input``) and the
connection closes. Header fields over 64 KB in all, over 100 or a line over 64 KB: a JSON 431.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from io import BufferedIOBase

    from flask import Flask
    from gevent.pywsgi import WSGIServer

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
    "400": _early_error(
        "400 Bad Request", "bad_request", "The request line or its header fields are not valid HTTP."
    ),
    "408": _early_error(
        "408 Request Timeout",
        "request_timeout",
        "The request's headers stopped arriving; send the whole request without pausing.",
    ),
    "431": _early_error(
        "431 Request Header Fields Too Large",
        "request_header_fields_too_large",
        "The request's header fields are too large: at most 100, each line under 64 KB, 64 KB in all.",
    ),
}
MAX_HEAD_BYTES = 64 * 1024  # every header line of a request together
DRAIN_BYTES = 64 * 1024  # after an error, an unread body larger than this closes the connection


class _HeadTooLarge(ValueError):
    """The header fields are over a limit (431)."""


class _HeadTimedOut(TimeoutError):
    """The request line and header fields took longer than the read timeout in all (408)."""


class _LimitedHead:
    """The stream http.client reads header lines from, refusing more than ``left`` bytes in all."""

    def __init__(self, rfile: Any, left: int) -> None:
        self.rfile = rfile
        self.left = left

    def readline(self, size: int = -1) -> bytes:
        if size < 0 or size > self.left + 1:
            size = self.left + 1
        line: bytes = self.rfile.readline(size)
        self.left -= len(line)
        if self.left < 0:
            raise _HeadTooLarge("header fields over 64 KB in all")
        return line


def _body_timeout_message(seconds: float) -> str:
    return (
        f"The request body stopped arriving for more than {seconds:g} s, so it was discarded; send it again."
    )


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def make_server(sock: socket.socket, app: Flask) -> WSGIServer:
    import gevent
    from gevent.pywsgi import Input, WSGIHandler, WSGIServer
    from werkzeug.exceptions import ClientDisconnected, RequestTimeout

    settings: Settings = app.config["TRAINFLOW"]
    read_timeout = settings.read_timeout_seconds
    idle_timeout = settings.idle_timeout_seconds
    write_timeout = settings.write_timeout_seconds

    class TimedInput(Input):
        """The request body (``wsgi.input``): each read waits at most the read timeout."""

        __slots__ = ("handler",)
        handler: QuietHandler

        def read(self, length: int | None = None) -> bytes:
            return self._timed(super().read, length)

        def readline(self, size: int | None = None) -> bytes:
            return self._timed(super().readline, size)

        def _timed(self, read: Callable[[int | None], bytes], argument: int | None) -> bytes:
            handler = self.handler
            if handler.is_body_timed_out:
                raise RequestTimeout(_body_timeout_message(read_timeout))
            handler.socket.settimeout(read_timeout)
            try:
                return read(argument)
            except TimeoutError:
                handler.is_body_timed_out = True
                handler.close_connection = True
                raise RequestTimeout(_body_timeout_message(read_timeout)) from None
            except OSError as e:
                # pywsgi's "unexpected end of file while reading request": the client went away
                # mid-body. A 400 (werkzeug's ClientDisconnected) that nobody reads, not a 500.
                handler.close_connection = True
                raise ClientDisconnected() from e
            finally:
                if handler.socket is not None:
                    handler.socket.settimeout(None)

        def _discard(self) -> None:
            # What the app left unread is read (and dropped) to reach the next request, unless
            # the connection closes anyway: never wait on a stalled or refused body.
            if self.handler.close_connection:
                return
            try:
                super()._discard()  # type: ignore[misc]  # pywsgi's own, private: not in its stubs
            except RequestTimeout:
                self.handler.close_connection = True

        @property
        def is_unread_large(self) -> bool:
            if self.chunked_input:
                return self.chunk_length != 0
            return (self.content_length or 0) - self.position > DRAIN_BYTES

    class QuietHandler(WSGIHandler):
        is_body_timed_out = False
        head_deadline: Any = None

        def read_requestline(self) -> str:
            # The wait for a request's first byte is the idle timeout (a new connection's too);
            # everything after it, the read timeout. A timeout here closes the connection.
            self.is_body_timed_out = False
            self.socket.settimeout(idle_timeout)
            self.rfile.peek(1)
            self.socket.settimeout(read_timeout)
            # The whole head, too, within the read timeout: a client trickling a byte at a
            # time (slowloris) never waits long enough for the timeout of a single read.
            self.head_deadline = gevent.Timeout.start_new(read_timeout, _HeadTimedOut("head too slow"))
            return super().read_requestline()

        def _end_head_deadline(self) -> None:
            if self.head_deadline is not None:
                self.head_deadline.close()
                self.head_deadline = None

        def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 - pywsgi's name
            # pywsgi's stubs ask for a BufferedIOBase; http.client only calls readline on it.
            message = super().MessageClass(cast("BufferedIOBase", _LimitedHead(fp, MAX_HEAD_BYTES)), *args)
            if message.status == "Line too long":
                raise _HeadTooLarge("a header line over 64 KB")
            return message

        def _handle_client_error(self, ex: Exception) -> Any:
            if isinstance(ex, (_HeadTooLarge, http.client.HTTPException)):
                # http.client refuses more than 100 header fields with HTTPException.
                return "431", EARLY_ERRORS["431"]
            if isinstance(ex, TimeoutError):
                return "408", EARLY_ERRORS["408"]
            return super()._handle_client_error(ex)  # type: ignore[misc]  # private: not in pywsgi's stubs

        def get_environ(self) -> dict[str, Any]:
            # Event streams write to a caught-up follower's socket from one loop
            # (trainflow.events.hub), past the WSGI write path, once the headers are out.
            self._end_head_deadline()  # the head is in; the app's reads time out one by one
            environ = super().get_environ()
            environ[HANDLER_KEY] = self
            plain = self.wsgi_input
            assert plain is not None  # pywsgi's get_environ just made it
            timed = TimedInput(
                plain.rfile, plain.content_length, socket=plain.socket, chunked_input=plain.chunked_input
            )
            timed.handler = self
            self.wsgi_input = timed
            if environ.get("wsgi.input") is plain:
                environ["wsgi.input"] = timed
            return environ

        def handle_one_response(self) -> None:
            # Each write of the response (one sendall: a stream's batch, a file's block) waits at
            # most the write timeout on a client that takes nothing: a reader that stopped
            # reading must not hold its greenlet and socket for ever.
            self.socket.settimeout(write_timeout)
            super().handle_one_response()

        def handle_error(self, t: Any, v: Any, tb: Any) -> None:
            if isinstance(v, TimeoutError):  # the write timeout: the client stopped reading
                log.info("Disconnected a client that took nothing for %g s", write_timeout)
                self.close_connection = True
                return
            super().handle_error(t, v, tb)

        def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # An error answered before a large body (a refused or stalled upload) was read:
            # close rather than read megabytes nobody wants, or wait on a client that stopped.
            if status.startswith(("4", "5")) and (
                self.is_body_timed_out
                or (isinstance(self.wsgi_input, TimedInput) and self.wsgi_input.is_unread_large)
            ):
                if not any(name.lower() == "connection" for name, _ in headers):
                    headers = [*headers, ("Connection", "close")]
            return super().start_response(status, headers, exc_info)

        def handle_one_request(self) -> tuple[str, bytes] | Literal[True] | None:
            # pywsgi answers a request line over 8 KB (414) or one it cannot parse (400) itself,
            # before the app, with an empty untyped body: give those the API's JSON error shape.
            try:
                result = super().handle_one_request()
            finally:
                self._end_head_deadline()
            if isinstance(result, tuple) and result[0] in EARLY_ERRORS:
                return result[0], EARLY_ERRORS[result[0]]
            return result

        def log_request(self) -> None:
            # pywsgi's access log prints the full request line; trainflow logs its own lines
            # and never a URL's query string, which may carry whatever a client put there.
            status = (self.status or "000")[:3] if isinstance(self.status, str) else "000"
            log.debug("%s %s %s", self.command, self.path.split("?", 1)[0] if self.path else "", status)

    return WSGIServer(sock, app, handler_class=QuietHandler, log=None, error_log=log)


def serve(
    app_factory: Callable[[int], Flask],
    settings: Settings,
    on_ready: Callable[[socket.socket], object] | None = None,
) -> None:
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
        exited = children.pop(pid, None)
        if exited is not None and not stopping:
            log.warning("Worker %d exited (status %d); starting another.", pid, status)
            spawn(exited)


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

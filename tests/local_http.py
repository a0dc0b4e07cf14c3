"""Real HTTP servers on 127.0.0.1 for tests: an ASGI app under uvicorn, and a webhook receiver.

with UvicornServer(app) as server:          # a thread in this process, a free port
    httpx.get(server.url + "/api/v1/bundles")
with WebhookReceiver() as hooks:            # records every POSTed JSON body
    ...; assert hooks.bodies == [{"text": ...}]
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from servers import HOST, free_port


class UvicornServer:
    """``app`` served by a real uvicorn (httptools/h11, real sockets) in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


class _ThreadedHTTPReceiver:
    """A ``ThreadingHTTPServer`` (``self.httpd``) served from ``self.thread`` for the length of a ``with`` block."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class WebhookReceiver(_ThreadedHTTPReceiver):
    """A Slack-like incoming webhook: records JSON bodies; can fail the next N posts with 500."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                receiver.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/services/T000/B000/secret-token") -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}{path}"

    @property
    def texts(self) -> list[str]:
        return [b["text"] for b in self.bodies]


class EventsV2Receiver(_ThreadedHTTPReceiver):
    """PagerDuty's Events API v2 on 127.0.0.1: checks each event's shape as PagerDuty does, answers 202 or 400.

    ``events``: the accepted events; ``rejected``: (body, errors) of refused ones.
    """

    SEVERITIES = ("critical", "error", "warning", "info")

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.rejected: list[tuple[Any, list[str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                errors = receiver.problems(body, self.path, self.headers.get("Content-Type", ""))
                if errors:
                    receiver.rejected.append((body, errors))
                    self._answer(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
                    return
                receiver.events.append(body)
                self._answer(202, {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")})

            def _answer(self, status: int, data: dict[str, Any]) -> None:
                out = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def problems(self, body: Any, path: str, content_type: str) -> list[str]:
        errors = []
        if path != "/v2/enqueue":
            errors.append(f"unknown path {path}")
        if not content_type.startswith("application/json"):
            errors.append("Content-Type must be application/json")
        if not isinstance(body, dict):
            return [*errors, "body must be an object"]
        if not isinstance(body.get("routing_key"), str) or len(body["routing_key"]) != 32:
            errors.append("'routing_key' must be a 32-character integration key")
        if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' must be trigger, acknowledge or resolve")
        dedup = body.get("dedup_key")
        if body.get("event_action") in ("acknowledge", "resolve") and not dedup:
            errors.append("'dedup_key' is required to acknowledge or resolve")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if body.get("event_action") == "trigger":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                return [*errors, "'payload' is missing"]
            if not isinstance(payload.get("summary"), str) or not payload["summary"] or len(payload["summary"]) > 1024:
                errors.append("'payload.summary' is missing or longer than 1024 characters")
            if payload.get("severity") not in self.SEVERITIES:
                errors.append("'payload.severity' must be critical, error, warning or info")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is missing or blank")
        return errors

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/v2/enqueue"


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that takes LOGIN/PLAIN auth with one user and records messages."""

    def __init__(self, user: str = "alerts", password: str = "smtp-pass-0123456789") -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[Any] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                from email import message_from_bytes, policy

                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
            if ok:
                receiver.logins.append(user)
            return AuthResult(success=ok, handled=False)

        from servers import free_port

        self.port = free_port()
        self.controller = Controller(Handler(), hostname=HOST, port=self.port, authenticator=authenticator, auth_require_tls=False)

    def __enter__(self) -> Self:
        self.controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.controller.stop()

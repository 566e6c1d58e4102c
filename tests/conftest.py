"""Real local servers for the tests: feeds over HTTP, a Slack webhook, an SMTP server.

Nothing here reaches the internet. The servers run in threads of the test process; the daemon
under test runs either in-process or as a real `python -m monitor` subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("MONITOR_TEST_CORPUS", REPO.parent / "shared" / "corpus"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Feeds ----------------------------------------------------------------------------------------

def rss(items: list[dict], title: str = "Test feed", extra: str = "") -> bytes:
    """An RSS 2.0 document; each item dict may hold title, link, guid, description, date
    (a datetime) and raw (XML inserted as is)."""
    parts = []
    for item in items:
        fields = []
        for key in ("title", "link", "description"):
            if key in item:
                fields.append(f"<{key}>{escape(item[key])}</{key}>")
        if "guid" in item:
            fields.append(f'<guid isPermaLink="false">{escape(item["guid"])}</guid>')
        if "date" in item:
            fields.append(f"<pubDate>{format_datetime(item['date'])}</pubDate>")
        fields.append(item.get("raw", ""))
        parts.append("<item>" + "".join(fields) + "</item>")
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{escape(title)}</title><link>http://example.org/</link>{extra}"
            + "".join(parts) + "</channel></rss>").encode()


def now() -> datetime:
    return datetime.now(UTC)


def hours_ago(h: float) -> datetime:
    return now() - timedelta(hours=h)


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


class LocalServer:
    """A threaded HTTP server on a free loopback port; subclasses give the handler."""

    def serve(self, handler: type[BaseHTTPRequestHandler],
              tls: ssl.SSLContext | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    conditional: bool = True  # answer 304 to a matching If-None-Match
    delay: float = 0.0  # seconds before answering
    trickle: float = 0.0  # seconds between bytes of the body
    length: bool = True  # send Content-Length (else close the connection after the body)


class FeedServer(LocalServer):
    """Serves feeds that tests change between polls, with ETag-based conditional GET; over
    HTTPS when given a server TLS context (see `tls_ca`)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls is not None else "http"
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.request_times: list[float] = []  # time.monotonic() of each of `requests`
        self.active = 0  # requests being answered right now
        self.peak = 0  # the most answered at once
        self.connections = 0  # TCP connections accepted
        self.lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections += 1

            def do_GET(self) -> None:
                with server.lock:
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                try:
                    self._answer()
                finally:
                    with server.lock:
                        server.active -= 1

            def _answer(self) -> None:
                with server.lock:
                    server.requests.append((self.path, dict(self.headers)))
                    server.request_times.append(time.monotonic())
                route = server.routes.get(self.path)
                if route is None:
                    self._send(404, b"not found", "text/plain", {})
                    return
                if route.delay:
                    time.sleep(route.delay)
                etag = f'"{hash(route.body) & 0xFFFFFFFF:x}"'
                if route.conditional and route.status == 200 and \
                        self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", None, {"ETag": etag})
                    return
                headers = dict(route.headers)
                if route.conditional and route.status == 200:
                    headers.setdefault("ETag", etag)
                self._send(route.status, route.body, route.content_type, headers, route.trickle,
                           route.length)

            def _send(self, status: int, body: bytes, content_type: str | None,
                      headers: dict[str, str], trickle: float = 0.0,
                      length: bool = True) -> None:
                try:
                    self.send_response(status)
                    if content_type:
                        self.send_header("Content-Type", content_type)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if length:
                        self.send_header("Content-Length", str(len(body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(trickle)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.serve(Handler, tls)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def set(self, path: str, body: bytes, **kwargs: object) -> str:
        self.routes[path] = Route(body, **kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()


# Slack ----------------------------------------------------------------------------------------

class SlackServer(LocalServer):
    """Plays Slack: an incoming webhook (`url`) and the Web API's `chat.postMessage`
    (`api_url`, bot token `token`). Records every payload; answers from a script of
    (status, body, headers) responses, then `200 ok` (webhook) or `{"ok": true, "ts": …}`."""

    token = "xoxb-0000-t0k3nS3cr3t"

    def __init__(self) -> None:
        self.received: list[dict] = []  # payloads Slack accepted (and posted)
        self.attempts: list[tuple[float, dict]] = []  # every request, with its arrival time
        self.script: list[tuple[int, str, dict[str, str]]] = []
        self.delay = 0.0  # seconds before answering each request
        self.lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                api = self.path.endswith("/chat.postMessage")
                if server.delay:
                    time.sleep(server.delay)
                with server.lock:
                    server.attempts.append((time.monotonic(), payload))
                    if server.script:
                        status, body, headers = server.script.pop(0)
                    elif not api:
                        status, body, headers = 200, "ok", {}
                    elif self.headers.get("Authorization") != f"Bearer {server.token}":
                        status, body, headers = 200, '{"ok":false,"error":"invalid_auth"}', {}
                    else:
                        ts = f"1700000000.{len(server.received) + 1:06d}"
                        status, headers = 200, {}
                        body = json.dumps({"ok": True, "channel": payload.get("channel"),
                                           "ts": ts, "message": {"ts": ts}})
                    accepted = status == 200 and (not api or '"ok":true' in
                                                  body.replace(" ", ""))
                    if accepted:
                        server.received.append(payload)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if api else "text/plain")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}/services/T0000/B0000/s3cr3tW3bh00kT0k3n"
        self.api_url = f"http://127.0.0.1:{self.port}/api"

    def respond(self, *responses: tuple) -> None:
        with self.lock:
            self.script.extend((r[0], r[1], r[2] if len(r) > 2 else {}) for r in responses)


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    server = SlackServer()
    yield server
    server.close()


# SMTP -----------------------------------------------------------------------------------------

class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content,
                                                policy=policy.default))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on a fixed port that tests can stop and start again."""

    def __init__(self, **controller_kwargs: object) -> None:
        self.inbox = _Inbox()
        self.port = free_port()
        self.kwargs = controller_kwargs
        self.controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        return self.inbox.messages

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port,
                                     **self.kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


# The daemon under test ------------------------------------------------------------------------

WATCH_ENTITIES = """\
entities:
  cosco:
    name: COSCO Shipping
    aliases: [COSCO Shipping, China COSCO Shipping, 中远海运, 中遠海運]
  chancay:
    name: Chancay megaport
    aliases: [Chancay port, puerto de Chancay, megapuerto de Chancay, 钱凯港, 錢凱港]
"""

WATCH_RULES = """\
rules:
  - id: cosco
    name: COSCO Shipping in the news
    query: '@cosco OR (cosco AND (port OR puerto OR shipping OR naviera))'
  - id: chancay-port
    name: Chancay megaport
    query: '@chancay OR (chancay AND (port OR puerto OR megapuerto))'
"""


@dataclass
class Workspace:
    """A rules directory, a database and the environment to run monitor against them."""

    root: Path
    env: dict[str, str]

    @property
    def rules(self) -> Path:
        return self.root / "rules"

    @property
    def db(self) -> Path:
        return self.root / "monitor.db"

    def write_feeds(self, *urls: str, extra: str = "") -> None:
        body = "feeds:\n" + "".join(f"  - url: {u}\n    name: Feed {i}\n{extra}"
                                     for i, u in enumerate(urls))
        (self.rules / "feeds.yaml").write_text(body, encoding="utf-8")

    def write(self, name: str, text: str) -> None:
        (self.rules / name).write_text(textwrap.dedent(text), encoding="utf-8")

    def run(self, *args: str, timeout: float = 60, check: bool = False,
            env: dict[str, str] | None = None,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "monitor", *args], cwd=self.root,
                                env={**self.env, **(env or {})}, capture_output=True,
                                text=True, timeout=timeout, input=input_text or "")
        if check and result.returncode != 0:
            raise AssertionError(f"monitor {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "monitor", *args], cwd=self.root,
                                env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update(values)
    return env


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    (tmp_path / "rules").mkdir()
    ws = Workspace(tmp_path, clean_env(
        MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'monitor.db'}",
        MONITOR_RULES_DIR=str(tmp_path / "rules"),
        MONITOR_DELIVERY_RETRY_BASE="0.01s",
        MONITOR_LOG_LEVEL="DEBUG",
    ))
    ws.write("entities.yaml", WATCH_ENTITIES)
    ws.write("watch.yaml", WATCH_RULES)
    return ws


@pytest.fixture
def tls_ca(tmp_path: Path):  # noqa: ANN201
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_context, ca_file

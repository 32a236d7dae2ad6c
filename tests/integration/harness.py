"""Test harness for driving the real repeaterd binary (Python 3.11 standard library only).

Pieces:
  * free_port, wait_until           - small utilities; every wait is bounded by a timeout
  * to_yaml, make_config, connection, repeater - build a temporary YAML config
  * Daemon                          - start/stop/kill the binary, wait until it accepts TCP;
                                      admin() speaks to its admin API, ctl() runs repeaterctl
  * submit, Response                - POST an XForm to the ingest API via http.client
  * Endpoint, Reply                 - a scriptable loopback HTTP receiver that records requests
  * EventLog                        - incremental reader of the JSON-lines event log
  * Db                              - read-only SQLite access for "nothing stored" checks
                                      (snapshot(), case() for the case store, integrity())
  * SmallFilesystem                 - a tmpfs of a few MiB (root only) and a filler file that
                                      takes its last byte: a full disk on demand
  * fixture, with_meta, multipart   - CommCare fixtures (tests/fixtures/commcare), OpenRosa bodies
  * typed_repeater                  - a repeater of any type (no format key where it is fixed)
  * DaemonTestCase                  - unittest base class wiring the above with cleanups

Environment: REPEATERD_BIN (the binary), REPEATERD_SOURCE_DIR (the repo root; used to find the
binary when REPEATERD_BIN is unset), REPEATERCTL_BIN (repeaterctl, likewise), REPEATERD_KEEP_TMP=1
keeps every temp dir.
"""

from __future__ import annotations

import base64
from urllib.parse import quote
import calendar
import collections
import errno
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SOURCE_DIR = Path(os.environ.get("REPEATERD_SOURCE_DIR", HERE.parent.parent))
TOKEN = "test-token-demo"
OTHER_TOKEN = "test-token-other"
SEED_APP_ID = "db9f874f0219444ee7848ddd023e292e"
SEED_INSTANCE_ID = "afcb3026-c4b3-463f-85ec-0cb9a2737fc5"
OPENROSA_NS = "http://openrosa.org/http/response"

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
# Received-On / Server-Modified-On / event times: UTC ISO 8601, microseconds, Z.
ISO_MICRO_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# Event-log ts: ISO 8601 in UTC ending in Z; fractional digits optional.
ISO_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
INSTANCE_ID_RE = re.compile(rb"(<(?:[\w.-]+:)?instanceID>)([^<]*)(</(?:[\w.-]+:)?instanceID>)")


def binary() -> Path:
    """The repeaterd binary under test."""
    env = os.environ.get("REPEATERD_BIN")
    return Path(env) if env else SOURCE_DIR / "build" / "repeaterd"


def ctl_binary() -> Path:
    """The repeaterctl binary under test."""
    env = os.environ.get("REPEATERCTL_BIN")
    return Path(env) if env else SOURCE_DIR / "build" / "repeaterctl"


# --------------------------------------------------------------------------- utilities

def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the daemon needs a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Polls predicate until it returns something truthy (returned) or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def parse_iso_z(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC timestamp ending in Z."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z$", text)
    if not m:
        raise ValueError(f"not an ISO 8601 Z timestamp: {text!r}")
    base = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return base + (float(m.group(2)) if m.group(2) else 0.0)


# --------------------------------------------------------------------------- forms

def seed_form() -> bytes:
    """The seed's "Forward Form" example XForm, byte for byte."""
    return (DATA / "seed_form.xml").read_bytes()


def form_with_id(instance_id: str, base: bytes | None = None) -> bytes:
    """base (default: the seed form) with its meta/instanceID replaced."""
    base = seed_form() if base is None else base
    out, n = INSTANCE_ID_RE.subn(lambda m: m.group(1) + instance_id.encode() + m.group(3), base, count=1)
    if n != 1:
        raise ValueError("form has no instanceID element")
    return out


def unique_form(base: bytes | None = None) -> tuple[str, bytes]:
    """A fresh instanceID and the form carrying it (distinct forms are never duplicates)."""
    iid = str(uuid.uuid4())
    return iid, form_with_id(iid, base)


def padded_form(size: int, noise: bool = False) -> tuple[str, bytes]:
    """A valid unique form of exactly `size` bytes, padded inside an element: with "x" bytes, or
    with base64 of random bytes when `noise` (deflate saves little of that, so the stored form
    takes about size / 4096 database pages)."""
    iid, form = unique_form()
    n = max(0, size - len(form) - len(b"<pad></pad>"))
    filler = base64.b64encode(os.urandom(n))[:n] if noise else b"x" * n
    out = form.replace(b"</question1>", b"</question1><pad>" + filler + b"</pad>", 1)
    assert len(out) == size, (len(out), size)
    return iid, out


def instance_id_of(body: bytes) -> str | None:
    m = INSTANCE_ID_RE.search(body)
    return m.group(2).decode() if m else None


# CommCare namespaces and the seed's identifiers ("Forward Form" / "Forward Cases" examples).
CASE_V2_NS = "http://commcarehq.org/case/transaction/v2"
DEVICE_REPORT_NS = "http://code.javarosa.org/devicereport"
SEED_XMLNS = "http://openrosa.org/formdesigner/B9C4EB51-A7CC-49B5-B7D5-10E9F10B450B"
SEED_CASE_ID = "b0916685-7247-4c44-b712-633d3d64e0c0"
SEED_USER_ID = "d0e472a6b36dfd3ee5059222e12b8c1b"


def fixtures_dir() -> Path:
    """CommCare HQ's test forms, copied into the repo with their licence (tests/fixtures/commcare)."""
    return SOURCE_DIR / "tests" / "fixtures" / "commcare"


def fixture(name: str) -> bytes:
    """A CommCare HQ fixture, byte for byte (see fixtures/commcare/README.md)."""
    return (fixtures_dir() / name).read_bytes()


def with_meta(form: bytes, instance_id: str) -> bytes:
    """form with <meta><instanceID> added as the root's last child (for fixtures without meta).
    The meta takes the root's default namespace, like a real client's."""
    end = form.rstrip().rfind(b"</")
    if end < 0:
        raise ValueError("form has no closing root tag")
    meta = b"<meta><instanceID>" + instance_id.encode() + b"</instanceID></meta>"
    return form[:end] + meta + form[end:]


def multipart(parts: list[tuple], boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of multipart/form-data, as ODK Collect sends it. Each part is
    (name, filename or None, content_type or None, body bytes)."""
    boundary = boundary or "----repeaterd" + uuid.uuid4().hex
    out = bytearray()
    for name, filename, ctype, body in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += disp.encode() + b"\r\n"
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


# --------------------------------------------------------------------------- config

_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./@-][A-Za-z0-9_./:@+-]*$")
_AMBIGUOUS = re.compile(r"^(true|false|yes|no|on|off|y|n|null|~|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$", re.I)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    # Plain where a human would write it plain; JSON quoting (valid YAML) otherwise.
    if _PLAIN_SCALAR.match(s) and not _AMBIGUOUS.match(s) and ": " not in s:
        return s
    return json.dumps(s)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts/lists/scalars; deterministic so line numbers are predictable."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = to_yaml(item, indent + 2).split("\n")
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def retry_policy(**overrides) -> dict:
    """Fast, exact (jitter 0) retry policy for tests."""
    policy = {"initial": "200ms", "multiplier": 2, "max_delay": "10s", "max_attempts": 5,
              "max_attempts_client_error": 2, "jitter": 0}
    policy.update(overrides)
    return policy


def connection(name: str, url: str, **overrides) -> dict:
    conn = {"name": name, "url": url, "connect_timeout": "2s", "timeout": "10s", "max_in_flight": 4}
    conn.update(overrides)
    return conn


def repeater(name: str, conn: str, domain: str = "demo", retry: dict | None = None, **overrides) -> dict:
    rep = {"name": name, "domain": domain, "type": "form", "connection": conn, "format": "xml"}
    rep.update(overrides)
    rep["retry"] = retry_policy(**(retry or {}))
    return rep


def typed_repeater(name: str, conn: str, rtype: str, fmt: str | None = None, **overrides) -> dict:
    """repeater() of any type. form_stub and app_structure have a fixed format, so they get no
    format key at all (a format there is a config error); form and case get fmt (default xml)."""
    rep = repeater(name, conn, type=rtype, **overrides)
    if rtype in ("form_stub", "app_structure"):
        rep.pop("format", None)
    else:
        rep["format"] = fmt or "xml"
    return rep


def make_config(workdir: Path, port: int, connections: list[dict], repeaters: list[dict], *,
                listen: dict | None = None, tokens: list[dict] | None = None,
                log: dict | None = None, storage: dict | None = None) -> dict:
    """A complete config dict whose files all live in workdir."""
    return {
        "listen": {"address": "127.0.0.1", "port": port, "max_body": "1MiB", "max_header": "16KiB",
                   "read_timeout": "10s", **(listen or {})},
        "ingest_tokens": tokens if tokens is not None else [
            {"domain": "demo", "token": TOKEN}, {"domain": "other", "token": OTHER_TOKEN}],
        "storage": {"path": str(workdir / "repeaterd.db"), "retention": "1d", **(storage or {})},
        "log": {"events_file": str(workdir / "events.log"), "level": "info",
                "queue_summary_every": "60s", **(log or {})},
        "connections": connections,
        "repeaters": repeaters,
    }


# --------------------------------------------------------------------------- ingest client

@dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage | None
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name) if self.headers is not None else None

    def openrosa(self) -> dict:
        """{'nature', 'message', 'form_id', 'records_created'} of an OpenRosa XML answer."""
        try:
            root = ET.fromstring(self.body)
        except ET.ParseError as e:
            raise AssertionError(f"{self.status} answer is not OpenRosa XML ({e}); Content-Type "
                                 f"{self.header('Content-Type')!r}, body {self.body[:300]!r}") from None
        if root.tag != f"{{{OPENROSA_NS}}}OpenRosaResponse":
            raise AssertionError(f"not an OpenRosaResponse: {self.body[:300]!r}")

        def text(tag):
            el = root.find(f"{{{OPENROSA_NS}}}{tag}")
            return el.text if el is not None else None

        msg = root.find(f"{{{OPENROSA_NS}}}message")
        created = text("records_created")
        return {"nature": msg.get("nature") if msg is not None else None,
                "message": (msg.text or "") if msg is not None else None,
                "form_id": text("form_id"),
                "records_created": int(created) if created is not None else None}

    def json(self) -> Any:
        return json.loads(self.body)


def submit(port: int, body: bytes, *, token: str | None = TOKEN, domain: str = "demo",
           app_id: str | None = None, content_type: str | None = "text/xml", method: str = "POST",
           path: str | None = None, auth: str = "bearer", headers: dict | None = None,
           timeout: float = 30) -> Response:
    """One request to the ingest listener; returns whatever the daemon answered."""
    target = path if path is not None else f"/a/{domain}/receiver"
    if app_id is not None:
        target += f"?app_id={app_id}"
    hdrs = dict(headers or {})
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    if token is not None:
        if auth == "basic":
            hdrs["Authorization"] = "Basic " + base64.b64encode(f"user:{token}".encode()).decode()
        else:
            hdrs["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        resp = exchange(conn, method, target, body, hdrs)
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        conn.close()


def exchange(conn: http.client.HTTPConnection, method: str, target: str, body: bytes | None,
             headers: dict) -> http.client.HTTPResponse:
    """Sends one request and returns the response (still to be read)."""
    try:
        conn.request(method, target, body=body, headers=headers)
    except (BrokenPipeError, ConnectionResetError) as send_error:
        # A server may answer (413/431) and close before reading everything we send;
        # the answer is usually still readable. If not, the send error is the story.
        try:
            return conn.getresponse()
        except Exception:
            raise send_error from None
    return conn.getresponse()


@dataclass
class BurstResult:
    acked: set = field(default_factory=set)          # ids answered 201
    duplicates: set = field(default_factory=set)     # ids answered 202 (stored by an earlier try)
    unacked: list = field(default_factory=list)      # (id, body) not stored as far as we know


def sanitized_build() -> bool:
    """Whether the repeaterd under test is an AddressSanitizer build (it links libasan): its
    quarantine holds freed memory on purpose, so RSS figures say nothing about the daemon."""
    out = subprocess.run(["ldd", str(binary())], capture_output=True, text=True).stdout
    return "libasan" in out


def submit_burst(daemon: "Daemon", forms: list[tuple[str, bytes]], threads: int = 8,
                 kill_when: Callable[[int], bool] | None = None, timeout: float = 60) -> BurstResult:
    """Submits (id, body) forms from `threads` client threads. With kill_when, the daemon is
    killed (-9) as soon as kill_when(number answered 201 so far) holds, and what was not answered
    yet is returned as unacked (submit it again after a restart: 201, or 202 when its commit had
    happened but the answer was lost)."""
    work: queue.Queue = queue.Queue()
    for f in forms:
        work.put(f)
    out, lock, crashed = BurstResult(), threading.Lock(), threading.Event()

    def client():
        while True:
            try:
                iid, body = work.get_nowait()
            except queue.Empty:
                return
            status = None
            if not crashed.is_set():
                try:
                    status = daemon.submit(body, timeout=20).status
                except (OSError, http.client.HTTPException):   # refused or reset by the kill
                    status = None
            with lock:
                if status == 201:
                    out.acked.add(iid)
                elif status == 202:
                    out.duplicates.add(iid)
                else:
                    out.unacked.append((iid, body))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    deadline = time.monotonic() + timeout
    if kill_when is not None:
        while not crashed.is_set() and any(t.is_alive() for t in workers):
            with lock:
                n = len(out.acked)
            if kill_when(n):
                daemon.kill9()
                crashed.set()
                break
            if time.monotonic() >= deadline:
                raise AssertionError(f"submit_burst: kill_when never held within {timeout}s")
            time.sleep(0.002)
    for t in workers:
        t.join(max(1.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in workers):
        raise AssertionError("submit_burst: client threads stuck")
    return out


# --------------------------------------------------------------------------- loopback endpoint

@dataclass
class Reply:
    """How the endpoint answers one request."""
    status: int = 200
    body: bytes = b"{}"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0          # seconds to wait before answering
    hang: bool = False          # never answer (until the endpoint is released/closed)


@dataclass
class Received:
    method: str
    target: str                 # path + query, as sent
    path: str
    query: str
    headers: dict               # lower-cased name -> value
    body: bytes
    t: float                    # time.monotonic() when the whole request had arrived
    wall: float                 # time.time() at the same moment
    status: int | None = None   # the status we answered with, once the answer was sent

    @property
    def instance_id(self) -> str | None:
        return instance_id_of(self.body)


class _QuietServer(ThreadingHTTPServer):
    """Peers (the daemon) dropping connections, e.g. on kill -9, is normal here: no tracebacks."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Endpoint:
    """A loopback HTTP receiver (ThreadingHTTPServer on 127.0.0.1, ephemeral port).

    Behaviour: `replies` are used in order, one per request, then `default` for the rest; or a
    `responder(received) -> Reply` callable decides per request. Every request is recorded.
    """

    def __init__(self, replies: list[Reply | int] | None = None, default: Reply | int = 200,
                 responder: Callable[[Received], Reply] | None = None):
        self._lock = threading.Condition()
        self._replies = collections.deque(self._as_reply(r) for r in (replies or []))
        self.default = self._as_reply(default)
        self.responder = responder
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.in_flight_log: list[tuple[float, int]] = []   # (time.monotonic(), in flight) per arrival
        self._released = threading.Event()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True   # hung handlers must not block interpreter exit
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"endpoint-{self.port}",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _as_reply(r: Reply | int) -> Reply:
        return Reply(status=r) if isinstance(r, int) else r

    def url(self, path: str = "/inbox") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set_default(self, reply: Reply | int) -> None:
        with self._lock:
            self.default = self._as_reply(reply)

    def release_hangs(self) -> None:
        """Hung requests end (connection closed without an answer); later hangs end at once."""
        self._released.set()

    def close(self) -> None:
        self.release_hangs()
        self.server.shutdown()
        self.server.server_close()

    # -- observation

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def instance_ids(self, answered_2xx: bool = False) -> set[str]:
        """Form ids seen (or, with answered_2xx, successfully delivered)."""
        return {r.instance_id for r in self.snapshot() if r.instance_id
                and (not answered_2xx or (r.status is not None and 200 <= r.status < 300))}

    def wait_for(self, predicate: Callable[[list[Received]], Any], timeout: float,
                 what: str = "requests") -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                result = predicate(list(self.requests))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout:.1f}s waiting for {what}; endpoint got "
                        f"{len(self.requests)} request(s)")
                self._lock.wait(min(left, 0.2))

    def wait_count(self, n: int, timeout: float) -> list[Received]:
        return self.wait_for(lambda rs: rs if len(rs) >= n else None, timeout,
                             f"{n} request(s)")

    def assert_quiet(self, expected: int, quiet: float) -> None:
        """Fails if the count differs from expected or changes within the quiet period."""
        with self._lock:
            deadline = time.monotonic() + quiet
            while len(self.requests) == expected:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._lock.wait(left)
            raise AssertionError(f"endpoint expected {expected} request(s), got {len(self.requests)}")

    # -- request handling

    def _next_reply(self, received: Received) -> Reply:
        if self.responder is not None:
            return self.responder(received)
        with self._lock:
            return self._replies.popleft() if self._replies else self.default

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)
            self._lock.notify_all()

    def _answered(self, received: Received, status: int) -> None:
        with self._lock:
            received.status = status
            self._lock.notify_all()

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
            self.in_flight_log.append((time.monotonic(), self.in_flight))

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler_class(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"   # keep-alive, like a real receiver

            def log_message(self, fmt, *args):  # keep test output clean
                pass

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                endpoint._enter()
                try:
                    body = self._read_body()
                    path, _, query = self.path.partition("?")
                    received = Received(
                        method=self.command, target=self.path, path=path, query=query,
                        headers={k.lower(): v for k, v in self.headers.items()}, body=body,
                        t=time.monotonic(), wall=time.time())
                    reply = endpoint._next_reply(received)
                    endpoint._record(received)
                    if reply.hang:
                        # Bounded so a forgotten release cannot leak a thread forever.
                        endpoint._released.wait(300)
                        self.close_connection = True
                        return
                    if reply.delay:
                        time.sleep(reply.delay)
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.wfile.flush()
                    endpoint._answered(received, reply.status)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    endpoint._leave()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler


# --------------------------------------------------------------------------- event log

class EventLog:
    """Incremental reader of the JSON-lines event log; tolerates a torn last line (kill -9)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self.events: list[dict] = []
        self.bad_lines: list[bytes] = []

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.events.append(ev)
        return self.events

    def of(self, event: str, **fields) -> list[dict]:
        return [e for e in self.read() if e.get("event") == event
                and all(e.get(k) == v for k, v in fields.items())]

    def wait_for(self, predicate: Callable[[list[dict]], Any], timeout: float = 10,
                 what: str = "events") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self.read())
            if result:
                return result
            if time.monotonic() >= deadline:
                tail = "\n".join(json.dumps(e) for e in self.events[-15:])
                raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; "
                                     f"last events:\n{tail}")
            time.sleep(0.02)

    def wait_event(self, event: str, timeout: float = 10, count: int = 1, **fields) -> list[dict]:
        """Waits until at least count events of that name (and field values) exist."""
        return self.wait_for(lambda _: (lambda m: m if len(m) >= count else None)(self.of(event, **fields)),
                             timeout, f"{count} x {event} {fields or ''}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no event log)"


# --------------------------------------------------------------------------- database

class Db:
    """Read-only view of the daemon's SQLite database (never writes, never blocks it long)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def _run(conn: sqlite3.Connection, sql: str, args: tuple) -> list[tuple]:
        # body(body, encoding): a payload's body as received (payloads.encoding 'deflate' is
        # zlib), the way the daemon reads it back.
        conn.create_function("body", 2, lambda b, enc: zlib.decompress(b) if enc == "deflate" else b,
                             deterministic=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._run(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5), sql, args)
        except sqlite3.OperationalError as e:
            # A WAL database whose last writer closed cleanly has no -shm file, and a read-only
            # connection cannot create one; a normal connection that only reads can.
            if "unable to open" not in str(e):
                raise
        return self._run(sqlite3.connect(str(self.path), timeout=5), sql, args)

    def count(self, table: str, where: str = "", args: tuple = ()) -> int:
        return self.query(f"SELECT count(*) FROM {table} {('WHERE ' + where) if where else ''}", args)[0][0]

    def counts(self) -> tuple[int, int, int]:
        """(payloads, records, attempts)."""
        return self.count("payloads"), self.count("records"), self.count("attempts")

    def snapshot(self) -> dict:
        """What ingest may write: payloads, record ids, cases and attachments (record states and
        attempts are left out: deliveries change them at any time). Equal snapshots before and
        after a rejected request prove nothing was stored."""
        return {
            "payloads": self.query("SELECT id, domain, payload_type, payload_id, sha256 FROM payloads ORDER BY id"),
            "records": self.query("SELECT id, payload, repeater FROM records ORDER BY id"),
            "cases": self.query("SELECT domain, case_id, case_type, closed, server_modified_on, state "
                                "FROM cases ORDER BY domain, case_id"),
            "attachments": self.query("SELECT payload, name, filename, content_type, body FROM attachments "
                                      "ORDER BY payload, name"),
        }

    # What the daemon assumes for a member a stored case state leaves out (payload::
    # case_from_storage_json): it writes none of these at their default.
    CASE_DEFAULTS = {"properties": {}, "indices": {}, "attachments": {}, "closed": False, "date_closed": None,
                     "external_id": ""}

    def case_row(self, case_id: str, domain: str = "demo") -> dict | None:
        """A case's row: its own columns, and its stored state JSON ("" for a case that only
        its first form touched: the daemon rebuilds that state from the form)."""
        rows = self.query("SELECT case_type, closed, server_modified_on, state FROM cases "
                          "WHERE domain = ? AND case_id = ?", (domain, case_id))
        if not rows:
            return None
        case_type, closed, modified, state = rows[0]
        return {"case_type": case_type, "closed": closed, "server_modified_on": modified, "state": state}

    def case_ids(self, domain: str = "demo") -> set[str]:
        return {r[0] for r in self.query("SELECT case_id FROM cases WHERE domain = ?", (domain,))}

    def attempts_of(self, record_id: str) -> list[tuple]:
        """(number, outcome, http_status, error) of every attempt of a record, in order."""
        return self.query("SELECT number, outcome, http_status, error FROM attempts WHERE record = ? "
                          "ORDER BY number", (record_id,))

    def text_cells(self) -> list[tuple[str, str, str]]:
        """(table, column, text) of every non-empty TEXT or BLOB cell of every table (BLOBs
        decoded as UTF-8 with replacement): for "this never reached the database" checks."""
        out = []
        tables = [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cols = [r[1] for r in self.query(f'PRAGMA table_info("{table}")')]
            for row in self.query(f'SELECT * FROM "{table}"'):
                for col, value in zip(cols, row):
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    if isinstance(value, str) and value:
                        out.append((table, col, value))
        return out

    def integrity(self) -> str:
        """PRAGMA integrity_check's verdict: "ok", or its list of problems."""
        return "\n".join(str(r[0]) for r in self.query("PRAGMA integrity_check"))

    def records_of(self, payload_id: str) -> list[tuple]:
        """(repeater, case_id, content_type) of every record of the payload(s) with that id."""
        return self.query("SELECT r.repeater, r.case_id, r.content_type FROM records r "
                          "JOIN payloads p ON p.id = r.payload WHERE p.payload_id = ? ORDER BY r.rowid",
                          (payload_id,))


# --------------------------------------------------------------------------- a disk that fills

class SmallFilesystem:
    """A tmpfs of `size` (mount's size=, e.g. "8m") mounted at `path`, for "the disk is full"
    tests: fill() writes a filler file until the filesystem has not one byte left, free() deletes
    it. Needs root (unittest.SkipTest otherwise); close() unmounts (lazily, if something still
    holds a file there)."""

    def __init__(self, path: Path, size: str = "8m"):
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a small tmpfs needs root")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(self.path)],
                             capture_output=True, text=True, timeout=30)
        if run.returncode != 0:
            raise unittest.SkipTest(f"cannot mount a tmpfs at {self.path}: {run.stderr.strip()}")
        self.filler = self.path / "filler"

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Writes the filler until a write of even one byte fails with ENOSPC; returns its size.
        Bounded: a few hundred writes of halving sizes."""
        chunk, writes = 1 << 20, 0
        with open(self.filler, "ab", buffering=0) as f:
            while chunk >= 1:
                writes += 1
                if writes > 10_000:
                    raise AssertionError(f"{self.path} did not fill up after {writes} writes")
                try:
                    if f.write(b"\0" * chunk) == 0:
                        chunk //= 2
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        return self.filler.stat().st_size

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)


# --------------------------------------------------------------------------- admin API client

UNIX_PATH_MAX = 107   # sun_path holds 108 bytes, one of them the terminating NUL


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket (the admin API's default listener)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class AdminResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    data: Any        # the parsed JSON when the answer is JSON, else the body's bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def __str__(self) -> str:
        return f"{self.status} {self.body[:500]!r}"


class CtlResult(collections.namedtuple("CtlResult", "returncode stdout stderr")):
    """What one repeaterctl run did; unpacks as (returncode, stdout, stderr)."""

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


# --------------------------------------------------------------------------- daemon

_SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                           r"WARNING: ThreadSanitizer")


def sanitizer_report(stderr: str) -> str | None:
    """The first sanitizer complaint in a daemon's stderr (ASan/UBSan builds), with context."""
    m = _SANITIZER_RE.search(stderr)
    return stderr[max(0, m.start() - 200):m.start() + 3000] if m else None

class DaemonDied(AssertionError):
    pass


class Daemon:
    """One repeaterd process on a temp config; restartable on the same files."""

    def __init__(self, workdir: Path, config: dict, env: dict | None = None):
        self.workdir = Path(workdir)
        self.config = config
        self.config_path = self.workdir / "repeaterd.yaml"
        self.stderr_path = self.workdir / "stderr.log"
        self.port = config["listen"]["port"]
        self.db = Db(Path(config["storage"]["path"]))
        self.events = EventLog(Path(config["log"]["events_file"]))
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def write_config(self) -> None:
        self.config_path.write_text(to_yaml(self.config) + "\n")

    def start(self, wait: bool = True, timeout: float = 20) -> "Daemon":
        self.write_config()
        self.starts += 1
        with open(self.stderr_path, "ab") as err:
            err.write(f"===== start #{self.starts} =====\n".encode())
            err.flush()
            self.proc = subprocess.Popen([str(binary()), "--config", str(self.config_path)],
                                         cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        if wait:
            self.wait_ready(timeout)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 20) -> None:
        """Ready = the ingest port accepts TCP connections (polled; fails fast if it exits)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonDied(f"repeaterd exited with {self.proc.returncode} before it was ready:\n"
                                 f"{self.stderr_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"repeaterd not ready within {timeout}s:\n{self.stderr_tail()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Sends sig and waits for the exit; returns the exit code (negative = killed by signal)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"repeaterd did not exit within {timeout}s of signal {sig}")
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> str | None:
        """Shutdown for cleanups; returns a problem description (bad exit, sanitizer report)."""
        problem = None
        if self.running():
            try:
                rc = self.stop(timeout=25)
                if rc != 0:
                    problem = f"repeaterd exited with {rc} on SIGTERM"
            except AssertionError as e:
                problem = str(e)
        report = sanitizer_report(self.stderr_text())
        return f"{problem or ''}\n{report or ''}".strip() or None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n: int = 80) -> str:
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def submit(self, body: bytes, **kw) -> Response:
        return submit(self.port, body, **kw)

    def post(self, path: str, body: bytes | str | dict | list = b"", content_type: str | None = "application/json",
             **kw) -> Response:
        """POST to another ingest path (/a/demo/cases, /a/demo/apps/ID); dicts and lists go as JSON."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return submit(self.port, body, path=path, content_type=content_type, **kw)

    # -- admin API and repeaterctl

    @property
    def admin_socket(self) -> Path | None:
        """The admin API's Unix socket (default: repeaterd.sock beside storage.path), or None when
        the config puts the admin API on TCP."""
        admin = self.config.get("admin") or {}
        listen = str(admin.get("listen", ""))
        if listen.startswith("unix:"):
            path = Path(listen[len("unix:"):])
        elif listen or "port" in admin:
            return None
        else:
            path = Path(self.config["storage"]["path"]).parent / "repeaterd.sock"
        if not path.is_absolute():
            path = self.workdir / path
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise AssertionError(f"the admin socket path {path} has {len(os.fsencode(path))} bytes, more than "
                                 f"a Unix socket takes ({UNIX_PATH_MAX}): shorten the test method's name "
                                 f"(it is part of the temp dir) or the workdir name")
        return path

    @property
    def admin_tcp(self) -> tuple[str, int] | None:
        """(host, port) of a TCP admin listener (a wildcard address is reached on loopback)."""
        admin = self.config.get("admin") or {}
        listen = str(admin.get("listen", ""))
        if listen and not listen.startswith("unix:"):
            host, _, port = listen.rpartition(":")
        elif "port" in admin:
            host, port = str(admin.get("address", "127.0.0.1")), admin["port"]
        else:
            return None
        host = host.strip("[]")
        return ("127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host), int(port)

    def admin(self, method: str, path: str, body: bytes | str | dict | None = None, *,
              token: str | None = None, headers: dict | None = None, timeout: float = 15) -> AdminResponse:
        """One request to the admin API (Unix socket or TCP, as the config says); token, when
        given, goes as Authorization: Bearer. Dicts go as JSON."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        tcp = self.admin_tcp
        conn = (http.client.HTTPConnection(tcp[0], tcp[1], timeout=timeout) if tcp
                else _UnixHTTPConnection(str(self.admin_socket), timeout))
        try:
            resp = exchange(conn, method, path, body, hdrs)
            raw = resp.read()
            data: Any = raw
            if "json" in (resp.getheader("Content-Type") or "").lower():
                try:
                    data = json.loads(raw)
                except ValueError:
                    raise AssertionError(f"{method} {path}: {resp.status} says JSON but is not: "
                                         f"{raw[:300]!r}") from None
            return AdminResponse(resp.status, resp.headers, raw, data)
        finally:
            conn.close()

    def case(self, case_id: str, domain: str = "demo") -> dict | None:
        """A case as the daemon reads it (GET /api/v1/cases/DOMAIN/ID: the state, defaults
        filled in, and its xform_ids), with its row's own columns under "_row"; None when the
        case is not stored."""
        row = self.db.case_row(case_id, domain)
        r = self.admin("GET", f"/api/v1/cases/{quote(domain, safe='')}/{quote(case_id, safe='')}")
        if r.status == 404:
            assert row is None, f"case {case_id} has a row but the admin API says {r}"
            return None
        if r.status != 200:
            raise AssertionError(f"case {case_id}: the admin API answered {r}")
        assert row is not None, f"the admin API shows case {case_id}, which has no row"
        out = {**Db.CASE_DEFAULTS, **r.data["case"]}
        if row["state"]:
            # A stored state is what the daemon serves, but for xform_ids (kept as its forms).
            self_state = {**Db.CASE_DEFAULTS, **json.loads(row["state"])}
            assert self_state == {k: v for k, v in out.items() if k != "xform_ids"}, (self_state, out)
        out["_row"] = {k: row[k] for k in ("case_type", "closed", "server_modified_on")}
        return out

    def admin_ok(self, method: str, path: str, body: bytes | str | dict | None = None, **kw) -> Any:
        """admin() that must answer 200; returns the parsed JSON (or bytes)."""
        r = self.admin(method, path, body, **kw)
        if r.status != 200:
            raise AssertionError(f"{method} {path} answered {r}")
        return r.data

    def ctl(self, *args: str, check: int | None = None, timeout: float = 60, raw: bool = False,
            config: bool = True, env: dict | None = None) -> CtlResult:
        """Runs repeaterctl --config <this daemon's config> ARGS (config=False leaves --config
        out); returns (returncode, stdout, stderr), stdout as bytes when raw. check: the exit
        code it must have. env adds to the environment; a None value removes a variable."""
        cmd = [str(ctl_binary()), *(["--config", str(self.config_path)] if config else []), *args]
        run_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
        try:
            p = subprocess.run(cmd, cwd=self.workdir, env=run_env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"repeaterctl {' '.join(args)} did not finish within {timeout}s") from None
        result = CtlResult(p.returncode, p.stdout if raw else p.stdout.decode(errors="replace"),
                           p.stderr.decode(errors="replace"))
        if check is not None and result.returncode != check:
            raise AssertionError(f"repeaterctl {' '.join(args)}: expected exit {check}, got {result}")
        return result


# --------------------------------------------------------------------------- unittest glue

class DaemonTestCase(unittest.TestCase):
    """Per-test temp dir, endpoints and daemons, all cleaned up; diagnostics on failure."""

    maxDiff = None

    def setUp(self):
        if not binary().exists():
            self.fail(f"repeaterd binary not found at {binary()} (set REPEATERD_BIN)")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"repeaterd-{self._testMethodName}-"))
        self._endpoints: list[Endpoint] = []
        self.addCleanup(self._remove_tmp)

    def _failed(self) -> bool:
        """Whether this test has failed so far. (_outcome.success cannot tell: it is reset for
        every part - setUp, test, each cleanup - so read the result's lists instead.)"""
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(test is self for test, _ in [*result.failures, *result.errors])

    def _remove_tmp(self):
        if self._failed() or os.environ.get("REPEATERD_KEEP_TMP"):
            sys.stderr.write(f"\n[kept temp dir {self.tmp}]\n")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def endpoint(self, *args, **kw) -> Endpoint:
        ep = Endpoint(*args, **kw)
        self._endpoints.append(ep)
        self.addCleanup(ep.close)
        return ep

    def small_filesystem(self, name: str, size: str = "8m") -> SmallFilesystem:
        """A SmallFilesystem at the temp dir's `name`. Call it before daemon(): cleanups run in
        reverse, so the daemon stops before the filesystem is unmounted."""
        fs = SmallFilesystem(self.tmp / name, size)
        self.addCleanup(fs.close)
        return fs

    def workdir(self, name: str | None = None) -> Path:
        """The test's temp dir, or a subdirectory of it for a second, independent daemon."""
        if name is None:
            return self.tmp
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return path

    def config(self, connections: list[dict], repeaters: list[dict], name: str | None = None,
               **kw) -> dict:
        return make_config(self.workdir(name), free_port(), connections, repeaters, **kw)

    def daemon(self, connections: list[dict] | None = None, repeaters: list[dict] | None = None, *,
               config: dict | None = None, start: bool = True, env: dict | None = None,
               name: str | None = None, **kw) -> Daemon:
        cfg = config if config is not None else self.config(connections or [], repeaters or [],
                                                            name, **kw)
        d = Daemon(self.workdir(name), cfg, env)
        # Registered after the endpoints, so it runs before them: the daemon drains while they
        # still answer.
        self.addCleanup(self._stop_daemon, d)
        if start:
            d.start()
        return d

    def _stop_daemon(self, d: Daemon):
        for ep in self._endpoints:
            ep.release_hangs()   # otherwise SIGTERM would wait out the drain grace period
        problem = d.close()
        if self._failed() or problem:
            sys.stderr.write(f"\n----- repeaterd stderr ({d.stderr_path}) -----\n{d.stderr_tail(150)}\n"
                             f"----- event log tail -----\n{d.events.tail(40)}\n")
        if problem:
            # Reported as an error of this test even when its assertions passed.
            raise AssertionError(f"repeaterd misbehaved at shutdown: {problem}")

    # -- shared assertions

    def assertSubmitted(self, resp: Response, status: int = 201, records: int | None = None) -> dict:
        self.assertEqual(resp.status, status, f"body: {resp.body[:500]!r}")
        info = resp.openrosa()
        self.assertEqual(info["nature"], "submit_success", info)
        if records is not None:
            self.assertEqual(info["records_created"], records, info)
        return info

    def assertJsonAccepted(self, resp: Response, status: int = 201, records: int | None = None) -> dict:
        """A JSON answer {"message", "id", "records_created", "case_ids"} with that status."""
        self.assertEqual(resp.status, status, f"body: {resp.body[:500]!r}")
        self.assertIn("json", (resp.header("Content-Type") or "").lower(), "a JSON answer needs a JSON Content-Type")
        try:
            info = resp.json()
        except ValueError:
            raise AssertionError(f"{status} answer is not JSON: {resp.body[:300]!r}") from None
        self.assertIsInstance(info, dict, info)
        for key in ("message", "id", "records_created", "case_ids"):
            self.assertIn(key, info, f"JSON answer lacks {key!r}: {info}")
        self.assertTrue(str(info["message"]).strip(), info)
        self.assertIsInstance(info["case_ids"], list, info)
        if records is not None:
            self.assertEqual(info["records_created"], records, info)
        return info

    def reason(self, resp: Response) -> str:
        """The reason of an error answer, OpenRosa (XForm clients) or JSON {"error": ...}."""
        try:
            body = resp.json()
        except ValueError:
            info = resp.openrosa()
            self.assertEqual(info["nature"], "submit_error", info)
            return info["message"]
        self.assertIsInstance(body, dict, body)
        return str(body.get("error") or body.get("message") or "")

    def assertRejectedUnchanged(self, d: "Daemon", before: dict, resp: Response, status: int,
                                reason_re: str | None = None) -> str:
        """resp is an error with that status and a reason; the database is as it was before."""
        self.assertEqual(resp.status, status, f"body: {resp.body[:500]!r}")
        why = self.reason(resp)
        self.assertTrue(why.strip(), f"a {status} needs a reason a person can act on: {resp.body[:300]!r}")
        if reason_re:
            self.assertRegex(why, re.compile(reason_re, re.I | re.S))
        self.assertEqual(d.db.snapshot(), before, f"the database changed for a rejected request ({status}: {why})")
        return why

    def assertSubmitError(self, resp: Response, status: int, reason_re: str | None = None) -> str:
        """An OpenRosa submit_error with that status; returns the reason text."""
        self.assertEqual(resp.status, status, f"body: {resp.body[:500]!r}")
        info = resp.openrosa()
        self.assertEqual(info["nature"], "submit_error", info)
        self.assertTrue(info["message"].strip(), "the error must carry a reason")
        if reason_re:
            self.assertRegex(info["message"], re.compile(reason_re, re.I))
        return info["message"]


# --------------------------------------------------------------------------- shared-daemon classes

class SharedDaemonTest(unittest.TestCase):
    """A test class whose tests share one daemon (cls.d) in one temp dir (cls.tmp): remembers
    whether any test failed, and at the end prints the daemon's stderr (and event log) and keeps
    the temp dir when one did, or when the daemon misbehaved at shutdown."""

    failed = False

    def tearDown(self):
        result = self._outcome.result
        if any(test is self for test, _ in [*result.failures, *result.errors]):
            type(self).failed = True

    @classmethod
    def finish_shared(cls, problem: str | None, event_log: bool = True) -> None:
        if cls.failed or problem:
            events = f"----- event log -----\n{cls.d.events.tail(60)}\n" if event_log else ""
            sys.stderr.write(f"\n----- repeaterd stderr -----\n{cls.d.stderr_tail(150)}\n"
                             f"{events}[kept temp dir {cls.tmp}]\n")
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if problem:
            raise AssertionError(f"repeaterd misbehaved at shutdown: {problem}")


def check_generated_doc(test: unittest.TestCase, path: Path, text: str, what: str, regenerate: str) -> None:
    """docs pages made from real runs: with REPEATERD_UPDATE_DOCS=1 write `text` to `path`,
    else fail unless the committed page equals it, so the docs cannot drift from the daemon."""
    if os.environ.get("REPEATERD_UPDATE_DOCS") == "1":
        path.write_text(text)
        return
    test.assertTrue(path.exists(), f"{path} is missing; generate it with REPEATERD_UPDATE_DOCS=1")
    committed = path.read_text()
    if committed != text:
        test.fail(f"{path} is out of date with {what}. Regenerate it:\n"
                  f"  cd tests/integration && REPEATERD_UPDATE_DOCS=1 python3 -m unittest {regenerate}\n"
                  f"First difference:\n{first_difference(committed, text)}")


def first_difference(a: str, b: str) -> str:
    """Where two texts first differ, for a failing "generated doc is current" check."""
    al, bl = a.splitlines(), b.splitlines()
    for i in range(max(len(al), len(bl))):
        x = al[i] if i < len(al) else "<end of file>"
        y = bl[i] if i < len(bl) else "<end of file>"
        if x != y:
            return f"line {i + 1}:\n  committed: {x}\n  now:       {y}"
    return "(only line endings differ)"


# HQ's expected case XML in casexml/apps/case/tests/test_v2_parsing.py testParseWithIndices
# (version 78dbc61f), verbatim.
HQ_PARSE_WITH_INDICES_XML = """<case case_id="foo-case-id" date_modified="2011-12-07T13:42:50.000000Z" user_id="bar-user-id" xmlns="http://commcarehq.org/case/transaction/v2">
        <create>
            <case_type>v2_case_type</case_type>
            <case_name>test case name</case_name>
            <owner_id>bar-user-id</owner_id>
        </create>
        <update>
            <date_opened>2011-12-06</date_opened>
        </update>
        <index>
            <baz_ref case_type="bop">some_other_referenced_id</baz_ref>
            <foo_ref case_type="bar">some_referenced_id</foo_ref>
        </index>
    </case>"""

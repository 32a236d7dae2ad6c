"""A loopback SMTP server for the notification tests (Python 3.11 stdlib + Debian's python3-aiosmtpd).

  * SmtpPki         - a test CA and a server certificate for 127.0.0.1/localhost (openssl command),
                      plus a self-signed one that no ca_file trusts
  * SmtpServer      - aiosmtpd's Controller on 127.0.0.1 with a handler that keeps every message
                      (envelope, raw bytes, whether it came over TLS, who logged in) in a
                      thread-safe list. Variants by keyword: plain; STARTTLS offered or required
                      (`starttls=pki`, `require_starttls=True`); implicit TLS (`smtps=pki`); AUTH
                      (`users={"name": "password"}`, over TLS only unless `auth_require_tls=False`)
  * Mail            - one received message; .message() parses it with email.policy.default
  * BlackHole       - a port that accepts TCP connections and never says anything (a hung server)

Every server is stopped by close(); tests register it with addCleanup. `python3 smtp_server.py`
runs a standalone self-check of every variant with Python's smtplib.

aiosmtpd comes from Debian (python3-aiosmtpd) and lives in /usr/lib/python3/dist-packages. When
the interpreter running the tests is not Debian's (pyenv, a venv), that directory is appended to
sys.path as a fallback, so its own packages still win.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:   # not Debian's python3: borrow Debian's package directory, last in the path
    import sys
    _DEBIAN = "/usr/lib/python3/dist-packages"
    if _DEBIAN not in sys.path:
        sys.path.append(_DEBIAN)
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd logs every connection at INFO and peer resets at WARNING/ERROR: keep test output clean.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- certificates

def _openssl(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode(errors='replace')}")


class SmtpPki:
    """Certificates (EC P-256) in `root`:

      ca_crt                 the test CA (give it as smtp.tls.ca_file)
      server_crt/key         CN and SAN 127.0.0.1 + localhost, signed by the CA
      selfsigned_crt/key     the same names, self-signed: not trusted by ca_file
    """

    def __init__(self, root: Path | None = None):
        self.owned = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="repeaterd-smtp-pki-"))
        self.root.mkdir(parents=True, exist_ok=True)
        r = self.root
        self.ca_crt, self.ca_key = r / "ca.crt", r / "ca.key"
        self.server_crt, self.server_key = r / "server.crt", r / "server.key"
        self.selfsigned_crt, self.selfsigned_key = r / "selfsigned.crt", r / "selfsigned.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        san = "subjectAltName=IP:127.0.0.1,DNS:localhost"
        _openssl(["req", "-x509", *ec, "-keyout", str(self.ca_key), "-out", str(self.ca_crt),
                  "-days", "30", "-subj", "/CN=repeaterd SMTP test CA"], r)
        csr = r / "server.csr"
        _openssl(["req", "-new", *ec, "-keyout", str(self.server_key), "-out", str(csr),
                  "-subj", "/CN=127.0.0.1"], r)
        ext = r / "server.ext"
        ext.write_text(f"{san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                       "extendedKeyUsage=serverAuth\n")
        _openssl(["x509", "-req", "-in", str(csr), "-CA", str(self.ca_crt), "-CAkey", str(self.ca_key),
                  "-CAcreateserial", "-out", str(self.server_crt), "-days", "30", "-extfile", str(ext)], r)
        _openssl(["req", "-x509", *ec, "-keyout", str(self.selfsigned_key), "-out", str(self.selfsigned_crt),
                  "-days", "30", "-subj", "/CN=127.0.0.1", "-addext", san], r)
        for p in r.iterdir():
            os.chmod(p, 0o644)

    def server_context(self, selfsigned: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if selfsigned:
            ctx.load_cert_chain(self.selfsigned_crt, self.selfsigned_key)
        else:
            ctx.load_cert_chain(self.server_crt, self.server_key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_crt))

    def close(self) -> None:
        if self.owned and not os.environ.get("REPEATERD_KEEP_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- received mail

@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes                 # the message as received (after dot-unstuffing)
    t: float                    # time.monotonic() when DATA completed
    wall: float                 # time.time() at the same moment
    tls: bool                   # the session was encrypted (STARTTLS or implicit TLS)
    login: str | None           # the AUTH user, when the session authenticated
    reply: str = "250 OK"       # what the server answered to DATA
    _parsed: Any = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")

    def message(self) -> email.message.EmailMessage:
        """The message parsed with email.policy.default (headers as objects, get_content())."""
        if self._parsed is None:
            self._parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        return self._parsed

    @property
    def subject(self) -> str:
        return str(self.message().get("Subject", ""))

    def body(self) -> str:
        """The decoded text/plain body, with "\n" line ends (the wire has CRLF)."""
        return self.message().get_content().replace("\r\n", "\n")

    def to(self) -> list[str]:
        """Addresses in the To header (lower-cased)."""
        header = self.message().get("To")
        return [a.addr_spec.lower() for a in header.addresses] if header is not None else []


@dataclass
class AuthAttempt:
    login: str
    ok: bool
    tls: bool


def _encrypted(smtp) -> bool:
    """Whether an aiosmtpd session runs over TLS (STARTTLS or implicit: session.ssl only knows
    the first)."""
    transport = getattr(smtp, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Handler:
    def __init__(self, server: "SmtpServer"):
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode(errors="replace")
        reply = self.server.data_reply
        reply = "" if self.server.stall else reply(envelope) if callable(reply) else reply
        self.server._record(Mail(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                                 data=bytes(data), t=time.monotonic(), wall=time.time(),
                                 tls=_encrypted(smtp), login=login, reply=reply))
        if self.server.stall:
            await asyncio.sleep(3600)   # never answers; cancelled by stop()
        return reply


class SmtpServer:
    """aiosmtpd on 127.0.0.1 (`port`, or an ephemeral one), started by the constructor unless
    start=False. Every message is kept in `mails` (thread-safe; see wait_count / assert_quiet).

      starttls=pki            offer STARTTLS with pki's server certificate (selfsigned=True: the
                              untrusted one); require_starttls=True refuses mail before it
      smtps=pki               implicit TLS on connect (an smtps:// URL)
      users={"u": "p"}        AUTH PLAIN/LOGIN accepted for these; anything else gets 535
      auth_require_tls=True   AUTH only offered over TLS (aiosmtpd's default; always offered on
                              an smtps port)
      data_reply              the answer to DATA: "250 OK" or e.g. "451 try later", or a callable
                              (envelope) -> answer; refused messages are kept too (Mail.accepted)
      stall=True              takes the message, then never answers (nor anything after it)
    """

    def __init__(self, port: int | None = None, *, starttls: SmtpPki | None = None,
                 smtps: SmtpPki | None = None, selfsigned: bool = False, require_starttls: bool = False,
                 users: dict[str, str] | None = None, auth_require_tls: bool = True,
                 data_reply: str | Callable = "250 OK", stall: bool = False, start: bool = True):
        self._lock = threading.Condition()
        self.mails: list[Mail] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.users = users
        self.data_reply = data_reply
        self.stall = stall
        self.port = port if port is not None else _free_port()
        kwargs: dict[str, Any] = {"server_hostname": "smtp.test", "ready_timeout": 10}
        if starttls is not None:
            kwargs["tls_context"] = starttls.server_context(selfsigned)
            kwargs["require_starttls"] = require_starttls
        if smtps is not None:
            kwargs["ssl_context"] = smtps.server_context(selfsigned)
        if users is not None:
            kwargs["authenticator"] = self._authenticate
            # aiosmtpd counts only STARTTLS as TLS; on an smtps port everything is encrypted.
            kwargs["auth_require_tls"] = auth_require_tls and smtps is None
        self._kwargs = kwargs
        self._controller: Controller | None = None
        if start:
            self.start()

    # -- lifecycle

    def start(self) -> "SmtpServer":
        """Listens on self.port (again, after stop())."""
        if self._controller is not None:
            return self
        self._controller = Controller(_Handler(self), hostname=HOST, port=self.port, **self._kwargs)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._controller.start()
                break
            except OSError:   # the port is still held by a socket we just closed: retry briefly
                self._controller = Controller(_Handler(self), hostname=HOST, port=self.port, **self._kwargs)
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._controller is not None:
            try:
                self._controller.stop()
            finally:
                self._controller = None

    close = stop

    @property
    def running(self) -> bool:
        return self._controller is not None

    def url(self, scheme: str | None = None) -> str:
        scheme = scheme or ("smtps" if "ssl_context" in self._kwargs else "smtp")
        return f"{scheme}://{HOST}:{self.port}"

    # -- AUTH

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = False
        login = ""
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode(errors="replace")
            password = auth_data.password.decode(errors="replace")
            ok = self.users is not None and self.users.get(login) == password
        with self._lock:
            self.auth_attempts.append(AuthAttempt(login, ok, _encrypted(server)))
            self._lock.notify_all()
        # handled=False: aiosmtpd answers a failure itself (535 5.7.8).
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # -- observation

    def _record(self, mail: Mail) -> None:
        with self._lock:
            self.mails.append(mail)
            self._lock.notify_all()

    def snapshot(self) -> list[Mail]:
        with self._lock:
            return list(self.mails)

    def count(self) -> int:
        with self._lock:
            return len(self.mails)

    def wait_for(self, predicate: Callable[[list[Mail]], Any], timeout: float, what: str = "mail") -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                result = predicate(list(self.mails))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; the SMTP "
                                         f"server got {len(self.mails)} message(s): "
                                         f"{[m.subject for m in self.mails]}")
                self._lock.wait(min(left, 0.2))

    def wait_count(self, n: int, timeout: float, where: Callable[[Mail], bool] | None = None,
                   what: str | None = None) -> list[Mail]:
        """At least n messages (matching `where`) have arrived; returns them all (matching)."""
        def pick(ms):
            got = [m for m in ms if where is None or where(m)]
            return got if len(got) >= n else None
        return self.wait_for(pick, timeout, what or f"{n} message(s)")

    def assert_quiet(self, expected: int, quiet: float, where: Callable[[Mail], bool] | None = None) -> None:
        """Fails if the number of messages (matching `where`) is not `expected` during `quiet` s."""
        deadline = time.monotonic() + quiet
        with self._lock:
            while True:
                got = [m for m in self.mails if where is None or where(m)]
                if len(got) != expected:
                    raise AssertionError(f"expected {expected} message(s), got {len(got)}: "
                                         f"{[m.subject for m in got]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._lock.wait(min(left, 0.2))


class BlackHole:
    """Listens on 127.0.0.1:port and never accepts: the kernel completes TCP handshakes (up to the
    backlog), the client then waits for a greeting that never comes."""

    def __init__(self, port: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port or 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- standalone check

def _self_check() -> None:
    """Every variant, driven by smtplib: what the tests rely on actually holds."""
    import smtplib

    msg = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\nDate: "
           + email.utils.formatdate(usegmt=True).encode()
           + b"\r\nMessage-ID: <1@x>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + "caf\u00e9 .dot\r\n.leading dot\r\n".encode())
    pki = SmtpPki()
    try:
        # plain
        s = SmtpServer()
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            c.sendmail("a@example.org", ["b@example.org", "c@example.org"], msg)
        m = s.wait_count(1, 5)[0]
        assert m.rcpt_tos == ["b@example.org", "c@example.org"] and not m.tls and m.login is None, m
        assert m.body() == "caf\u00e9 .dot\n.leading dot\n", repr(m.body())
        assert m.subject == "hi" and m.to() == ["b@example.org"]
        s.stop()
        # restart on the same port (the SMTP-down test does this)
        s.start()
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            c.sendmail("a@example.org", ["b@example.org"], msg)
        s.wait_count(2, 5)
        s.close()
        # port closed: refused
        try:
            smtplib.SMTP(HOST, s.port, timeout=2)
            raise AssertionError("a stopped server still answers")
        except ConnectionRefusedError:
            pass

        # STARTTLS required + AUTH (only over TLS)
        s = SmtpServer(starttls=pki, require_starttls=True, users={"alerts": "s3cret"})
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            c.ehlo()
            assert c.has_extn("starttls") and not c.has_extn("auth"), c.esmtp_features
            try:
                c.sendmail("a@example.org", ["b@example.org"], msg)
                raise AssertionError("mail accepted without STARTTLS")
            except smtplib.SMTPException:
                pass
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            c.starttls(context=pki.client_context())
            c.ehlo()
            assert c.has_extn("auth"), c.esmtp_features
            try:
                c.login("alerts", "wrong")
                raise AssertionError("wrong password accepted")
            except smtplib.SMTPAuthenticationError:
                pass
            c.login("alerts", "s3cret")
            c.sendmail("a@example.org", ["b@example.org"], msg)
        m = s.wait_count(1, 5)[0]
        assert m.tls and m.login == "alerts", m
        # smtplib tries each mechanism (PLAIN, LOGIN) before it gives up on a password
        tried = [(a.login, a.ok, a.tls) for a in s.auth_attempts]
        assert tried[-1] == ("alerts", True, True) and set(tried[:-1]) == {("alerts", False, True)}, tried
        s.close()

        # AUTH without TLS
        s = SmtpServer(users={"alerts": "s3cret"}, auth_require_tls=False)
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            c.login("alerts", "s3cret")
            c.sendmail("a@example.org", ["b@example.org"], msg)
        m = s.wait_count(1, 5)[0]
        assert not m.tls and m.login == "alerts", m
        s.close()

        # smtps + AUTH
        s = SmtpServer(smtps=pki, users={"alerts": "s3cret"})
        with smtplib.SMTP_SSL(HOST, s.port, timeout=5, context=pki.client_context()) as c:
            c.login("alerts", "s3cret")
            c.sendmail("a@example.org", ["b@example.org"], msg)
        m = s.wait_count(1, 5)[0]
        assert m.tls and m.login == "alerts", m
        s.close()

        # the self-signed certificate is not trusted by the CA file
        s = SmtpServer(starttls=pki, selfsigned=True)
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            try:
                c.starttls(context=pki.client_context())
                raise AssertionError("self-signed certificate accepted")
            except ssl.SSLCertVerificationError:
                pass
        s.close()

        # a temporary failure answer
        s = SmtpServer(data_reply="451 4.3.0 try again later")
        with smtplib.SMTP(HOST, s.port, timeout=5) as c:
            try:
                c.sendmail("a@example.org", ["b@example.org"], msg)
                raise AssertionError("451 not reported")
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451
        m = s.wait_count(1, 5)[0]
        assert not m.accepted and m.reply.startswith("451"), m
        s.close()

        # stalls after DATA: the client waits for an answer that never comes
        s = SmtpServer(stall=True)
        with smtplib.SMTP(HOST, s.port, timeout=1) as c:
            try:
                c.sendmail("a@example.org", ["b@example.org"], msg)
                raise AssertionError("the stalled server answered DATA")
            except (socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected):
                pass
            m = s.wait_count(1, 5)[0]
            assert not m.accepted and m.reply == "", m
            s.close()   # with the handler still waiting

        # black hole: connects, never greets
        b = BlackHole()
        try:
            smtplib.SMTP(HOST, b.port, timeout=0.5)
            raise AssertionError("the black hole greeted")
        except (socket.timeout, smtplib.SMTPServerDisconnected):
            pass
        b.close()
    finally:
        pki.close()
    print("smtp_server self-check: OK (plain, restart, STARTTLS required + AUTH, AUTH without TLS, "
          "smtps, untrusted certificate, 451, stall after DATA, black hole)")


if __name__ == "__main__":
    _self_check()

"""Fixtures that start and stop real servers for the connection tests (Python 3.11 stdlib only).

Everything listens on 127.0.0.1 with ephemeral ports and lives in a temp dir.

  * Pki, shared_pki()        - test certificates made with the `openssl` command: a CA, a server
                               certificate for 127.0.0.1/localhost, an expired one, one for
                               other.example, a self-signed one, a client CA and a client cert
  * Nginx, nginx_server()    - Debian's nginx as a foreground process on a generated config
  * htpasswd_line()          - an nginx auth_basic user line (`openssl passwd -apr1`)
  * Apache, htdigest_line()  - Debian's apache2 (mod_auth_digest, mod_reflector) in the foreground
  * DigestServer             - a Python RFC 7616 Digest server (MD5 and SHA-256, stale nonces)
  * TokenServer              - an OAuth 2.0 client-credentials token endpoint that counts tokens
  * bearer_api()             - a harness Endpoint that wants a currently valid token from it
  * run_webhook_verify()     - `node webhook_verify.js FILE` (the standardwebhooks npm package)

Servers are started by their constructor or start() and stopped by close(); tests register
close() with addCleanup. A server that cannot start raises with its own error log.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from harness import Endpoint, Received, Reply, _QuietServer, free_port

HERE = Path(__file__).resolve().parent


def _run(cmd: list[str], cwd: Path, input: bytes | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def _wait_tcp(port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    """Polls until 127.0.0.1:port accepts; fails fast (with the server's log) if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}:\n"
                               f"{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what} not listening on {port} within {timeout}s:\n{_tail(log)}")
        time.sleep(0.02)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return f"(no {path})"


def _stop(proc: subprocess.Popen | None, sig: int, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _readable_tree(path: Path) -> None:
    """nginx workers and apache children drop to nobody when started as root: let them read the
    fixture's directory, and traverse its parents inside the temp dir (mkdtemp makes them 0700).
    Only test material lives there."""
    path = Path(path).resolve()
    os.chmod(path, 0o755)
    tmp = Path(tempfile.gettempdir()).resolve()
    for parent in path.parents:
        if parent == tmp or tmp not in parent.parents:
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


# --------------------------------------------------------------------------- certificates

_CA_CNF = """\
[ ca ]
default_ca = testca
[ testca ]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
[ server_local ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[ server_other ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
[ client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
"""


class Pki:
    """Test certificates (EC P-256, made with the openssl command) in `root`:

      ca_crt            the test CA (give it as tls.ca_file)
      server_crt/key    127.0.0.1 + localhost, signed by the CA, valid now
      expired_crt/key   127.0.0.1 + localhost, signed by the CA, valid only in January 2020
      other_crt/key     other.example only, signed by the CA, valid now
      selfsigned_crt/key 127.0.0.1 + localhost, self-signed (not in ca_file)
      client_ca_crt     a second CA that signs client certificates (nginx ssl_client_certificate)
      client_crt/key    a client certificate signed by the client CA
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        _readable_tree(self.root)
        self.ca_crt, self.ca_key = self._self_signed_ca("ca", "repeaterd test CA")
        self.client_ca_crt, self.client_ca_key = self._self_signed_ca("client-ca", "repeaterd test client CA")
        self.server_crt, self.server_key = self._signed("server", "127.0.0.1", "server_local", self.ca_crt, self.ca_key)
        self.expired_crt, self.expired_key = self._signed(
            "expired", "127.0.0.1", "server_local", self.ca_crt, self.ca_key,
            dates=("20200101000000Z", "20200201000000Z"))
        self.other_crt, self.other_key = self._signed("other", "other.example", "server_other", self.ca_crt, self.ca_key)
        self.client_crt, self.client_key = self._signed("client", "repeaterd-client", "client",
                                                        self.client_ca_crt, self.client_ca_key)
        self.selfsigned_crt, self.selfsigned_key = self.root / "selfsigned.crt", self.root / "selfsigned.key"
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(self.selfsigned_key), "-out", str(self.selfsigned_crt), "-days", "30",
              "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], self.root)
        for p in self.root.iterdir():
            if p.is_file():
                os.chmod(p, 0o644)

    def _key_and_csr(self, name: str, cn: str) -> tuple[Path, Path]:
        key, csr = self.root / f"{name}.key", self.root / f"{name}.csr"
        _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"], self.root)
        return key, csr

    def _self_signed_ca(self, name: str, cn: str) -> tuple[Path, Path]:
        crt, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        # req -x509 gives basicConstraints CA:TRUE, subject/authority key ids by default.
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(key), "-out", str(crt), "-days", "30", "-subj", f"/CN={cn}"], self.root)
        return crt, key

    def _signed(self, name: str, cn: str, extensions: str, ca_crt: Path, ca_key: Path,
                dates: tuple[str, str] | None = None) -> tuple[Path, Path]:
        """`openssl ca` (it takes explicit -startdate/-enddate, so a cert can be born expired)."""
        key, csr = self._key_and_csr(name, cn)
        db = self.root / f"db-{name}"
        db.mkdir()
        (db / "index.txt").write_text("")
        (db / "serial").write_text(secrets.token_hex(8) + "\n")
        cnf = self.root / f"ca-{name}.cnf"
        cnf.write_text(_CA_CNF.format(db=db))
        crt = self.root / f"{name}.crt"
        cmd = ["openssl", "ca", "-batch", "-notext", "-config", str(cnf), "-cert", str(ca_crt), "-keyfile",
               str(ca_key), "-in", str(csr), "-out", str(crt), "-extensions", extensions]
        cmd += ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", "30"]
        _run(cmd, self.root)
        return crt, key


_pki: Pki | None = None
_pki_lock = threading.Lock()


def shared_pki() -> Pki:
    """One Pki per test process (made on first use, removed at exit unless REPEATERD_KEEP_TMP)."""
    global _pki
    with _pki_lock:
        if _pki is None:
            root = Path(tempfile.mkdtemp(prefix="repeaterd-pki-"))
            if not os.environ.get("REPEATERD_KEEP_TMP"):
                atexit.register(shutil.rmtree, root, True)
            _pki = Pki(root)
        return _pki


# --------------------------------------------------------------------------- nginx

def htpasswd_line(user: str, password: str) -> str:
    """user:$apr1$... for nginx auth_basic_user_file."""
    hashed = _run(["openssl", "passwd", "-apr1", "-stdin"], Path("/"), input=password.encode() + b"\n").strip()
    return f"{user}:{hashed}\n"


def nginx_server(port: int, body: str, *, cert: Path | None = None, key: Path | None = None,
                 client_ca: Path | None = None, listen: tuple[str, ...] = ("127.0.0.1",)) -> str:
    """One `server {}` block: TLS when cert/key are given, client certificates required when
    client_ca is given; `body` holds the locations. listen: addresses ("127.0.0.1", "[::1]")."""
    lines = [f"listen {addr}:{port}{' ssl' if cert else ''};" for addr in listen] + ["server_name _;"]
    if cert:
        lines += [f"ssl_certificate {cert};", f"ssl_certificate_key {key};",
                  "ssl_protocols TLSv1.2 TLSv1.3;"]
    if client_ca:
        lines += [f"ssl_client_certificate {client_ca};", "ssl_verify_client on;"]
    inner = "\n        ".join(lines)
    return f"    server {{\n        {inner}\n{body}\n    }}\n"


class Nginx:
    """Debian's nginx in the foreground (`daemon off`) on a generated config in workdir.

    servers: `server {}` blocks (see nginx_server); ports: the ports they listen on (waited for).
    The access log has one line per request: port, status, method, target, the Authorization
    header and the client certificate's subject.
    """

    def __init__(self, workdir: Path, servers: list[str], ports: list[int], start: bool = True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        _readable_tree(self.dir)
        self.ports = ports
        self.conf = self.dir / "nginx.conf"
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.proc: subprocess.Popen | None = None
        w = self.dir
        self.conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format t '$server_port $status $request_method $request_uri auth="$http_authorization" ssl_client="$ssl_client_s_dn"';
    access_log {w}/access.log t;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    client_max_body_size 10m;
    default_type application/json;
{''.join(servers)}
}}
""")
        if start:
            self.start()

    def start(self, timeout: float = 15) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        check = subprocess.run([nginx, "-t", "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.error_log)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t rejected {self.conf}:\n{check.stdout.decode(errors='replace')}")
        with open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.error_log)],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        for port in self.ports:
            _wait_tcp(port, self.proc, timeout, "nginx", self.error_log)
        return self

    def close(self) -> None:
        _stop(self.proc, signal.SIGTERM)   # fast shutdown

    def access_lines(self) -> list[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


# --------------------------------------------------------------------------- apache

def htdigest_line(user: str, realm: str, password: str) -> str:
    """user:realm:md5(user:realm:password), the htdigest file format mod_auth_digest reads."""
    return f"{user}:{realm}:{hashlib.md5(f'{user}:{realm}:{password}'.encode()).hexdigest()}\n"


APACHE_MODULES = ["mpm_event", "authn_core", "authn_file", "authz_core", "authz_user", "auth_digest",
                  "reflector", "env"]


def apache_binary() -> str:
    return shutil.which("apache2") or "/usr/sbin/apache2"


def apache_supports(directive_block: str) -> tuple[bool, str]:
    """Whether `apache2 -t` accepts a config with this extra block (e.g. an AuthDigestAlgorithm)."""
    d = Path(tempfile.mkdtemp(prefix="repeaterd-apache-probe-"))
    try:
        a = Apache(d, directive_block, start=False)
        proc = subprocess.run([apache_binary(), "-t", "-f", str(a.conf)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=30)
        return proc.returncode == 0, proc.stdout.decode(errors="replace").strip()
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Apache:
    """Debian's apache2 in the foreground (-DFOREGROUND) on a generated minimal config in workdir.

    `locations` is config text (typically <Location> blocks); POSTs are answered by
    `SetHandler reflector` (mod_reflector: 200 with the request body echoed back).
    """

    def __init__(self, workdir: Path, locations: str, port: int | None = None, start: bool = True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        _readable_tree(self.dir)
        self.port = port or free_port()
        self.conf = self.dir / "httpd.conf"
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.proc: subprocess.Popen | None = None
        mods = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in APACHE_MODULES)
        # Started as root, apache serves from its children as User: nobody must read the files.
        user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"""\
ServerRoot {self.dir}
{mods}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile {self.dir}/httpd.pid
DefaultRuntimeDir {self.dir}
Mutex file:{self.dir} default
ErrorLog {self.error_log}
LogLevel info auth_digest:debug
LogFormat "%>s %m %U auth=\\"%{{Authorization}}i\\"" t
CustomLog {self.access_log} t
{user}StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
KeepAlive On
{locations}
""")
        if start:
            self.start()

    def start(self, timeout: float = 15) -> "Apache":
        with open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen([apache_binary(), "-f", str(self.conf), "-DFOREGROUND"],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        _wait_tcp(self.port, self.proc, timeout, "apache2", self.error_log)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        _stop(self.proc, signal.SIGTERM)

    def error_lines(self) -> list[str]:
        try:
            return self.error_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def access_lines(self) -> list[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


# --------------------------------------------------------------------------- small Python servers

class _PyServer:
    """A ThreadingHTTPServer on 127.0.0.1 with an ephemeral port; subclasses define handle()."""

    def __init__(self):
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _any(self):
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    status, headers, out = outer.handle(self.command, self.path,
                                                        {k.lower(): v for k, v in self.headers.items()},
                                                        self.headers, body)
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = _any

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name=f"pyserver-{self.port}").start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method, target, headers, raw_headers, body):  # pragma: no cover - abstract
        raise NotImplementedError


_DIGEST_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_auth_params(value: str) -> dict[str, str]:
    return {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
            for m in _DIGEST_PARAM.finditer(value)}


_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass
class DigestRequest:
    target: str
    authorization: str | None
    status: int
    algorithm: str | None = None
    stale_sent: bool = False
    body: bytes = b""


class DigestServer(_PyServer):
    """RFC 7616 Digest (qop=auth) with MD5 and/or SHA-256 challenges, in `algorithms` order.

    Checks the username, realm, nonce (issued here), uri (= the request target), algorithm and
    response. A nonce older than nonce_lifetime gets a stale=true challenge when the response is
    otherwise right; with stale_once, the first right response of all gets one too (a server
    that just rotated its nonces). Answers 200 '{}' when authenticated; every request is recorded.
    """

    def __init__(self, users: dict[str, str], realm: str = "repeaterd-digest",
                 algorithms: tuple[str, ...] = ("SHA-256", "MD5"), nonce_lifetime: float = 300.0,
                 stale_once: bool = False):
        self.users = users
        self.stale_once = stale_once
        self.realm = realm
        self.algorithms = algorithms
        self.nonce_lifetime = nonce_lifetime
        self.nonces: dict[str, float] = {}
        self.opaque = secrets.token_hex(8)
        self.requests: list[DigestRequest] = []
        super().__init__()

    def _challenges(self, stale: bool) -> list[tuple[str, str]]:
        nonce = secrets.token_hex(16)
        with self.lock:
            self.nonces[nonce] = time.monotonic()
        return [("WWW-Authenticate",
                 f'Digest realm="{self.realm}", qop="auth", algorithm={alg}, nonce="{nonce}", '
                 f'opaque="{self.opaque}"' + (", stale=true" if stale else ""))
                for alg in self.algorithms]

    def handle(self, method, target, headers, raw_headers, body):
        auth = headers.get("authorization")
        rec = DigestRequest(target, auth, 401, body=body)
        try:
            stale = False
            if auth and auth[:7].lower() == "digest ":
                p = parse_auth_params(auth[7:])
                alg = p.get("algorithm", "MD5")
                h = _HASHES.get(alg.upper()) if alg.upper() in (a.upper() for a in self.algorithms) else None
                user, nonce = p.get("username"), p.get("nonce", "")
                with self.lock:
                    issued = self.nonces.get(nonce)
                ok_shape = (h is not None and user in self.users and p.get("realm") == self.realm
                            and p.get("uri") == target and issued is not None and p.get("qop") == "auth"
                            and p.get("opaque") == self.opaque and p.get("nc") and p.get("cnonce"))
                if ok_shape:
                    def H(s):
                        return h(s.encode()).hexdigest()
                    ha1 = H(f"{user}:{self.realm}:{self.users[user]}")
                    ha2 = H(f"{method}:{p['uri']}")
                    expected = H(f"{ha1}:{nonce}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
                    if secrets.compare_digest(expected, p.get("response", "")):
                        rec.algorithm = alg
                        with self.lock:
                            forced, self.stale_once = self.stale_once, False
                        if forced or time.monotonic() - issued > self.nonce_lifetime:
                            stale = True
                        else:
                            rec.status = 200
                            return 200, [("Content-Type", "application/json")], b"{}"
            rec.stale_sent = stale
            return 401, [*self._challenges(stale), ("Content-Type", "text/plain")], b"authentication required"
        finally:
            with self.lock:
                self.requests.append(rec)

    def snapshot(self) -> list[DigestRequest]:
        with self.lock:
            return list(self.requests)


@dataclass
class TokenRequestSeen:
    authorization: str | None
    content_type: str | None
    form: dict[str, str]
    status: int = 0


class TokenServer(_PyServer):
    """An OAuth 2.0 token endpoint for the client credentials grant (RFC 6749 §4.4) at /token.

    Client authentication: client_auth "basic" (HTTP Basic, the default) or "body" (client_id and
    client_secret form fields). Tokens are random, live expires_in seconds, and are counted;
    revoke() makes one invalid at once. fail_with = (status, json body) answers every request
    with that error instead.
    """

    def __init__(self, client_id: str, client_secret: str, *, client_auth: str = "basic",
                 expires_in: int = 3600, scope: str | None = None):
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth = client_auth
        self.expires_in = expires_in
        self.scope = scope
        self.fail_with: tuple[int, dict] | None = None
        self.issued: list[tuple[str, float]] = []     # (token, monotonic expiry)
        self.revoked: set[str] = set()
        self.requests: list[TokenRequestSeen] = []
        super().__init__()

    @property
    def token_url(self) -> str:
        return self.url("/token")

    def _client_ok(self, headers: dict, form: dict) -> bool:
        auth = headers.get("authorization", "")
        if self.client_auth == "basic":
            if not auth.lower().startswith("basic ") or "client_secret" in form:
                return False
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            # RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
            user, pw = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
            return user == self.client_id and pw == self.client_secret
        return (not auth and form.get("client_id") == self.client_id
                and form.get("client_secret") == self.client_secret)

    def handle(self, method, target, headers, raw_headers, body):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        seen = TokenRequestSeen(headers.get("authorization"), headers.get("content-type"), form)
        with self.lock:
            self.requests.append(seen)

        def answer(status, obj, extra=()):
            seen.status = status
            return status, [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *extra], \
                json.dumps(obj).encode()

        if self.fail_with is not None:
            return answer(*self.fail_with)
        if method != "POST" or target.split("?")[0] != "/token":
            return answer(404, {"error": "not_found"})
        if "application/x-www-form-urlencoded" not in (headers.get("content-type") or ""):
            return answer(400, {"error": "invalid_request", "error_description": "form body expected"})
        if not self._client_ok(headers, form):
            return answer(401, {"error": "invalid_client", "error_description": "client authentication failed"},
                          [("WWW-Authenticate", 'Basic realm="token"')])
        if form.get("grant_type") != "client_credentials":
            return answer(400, {"error": "unsupported_grant_type"})
        if self.scope is not None and form.get("scope") != self.scope:
            return answer(400, {"error": "invalid_scope", "error_description": f"scope must be {self.scope}"})
        token = "at-" + secrets.token_hex(20)
        with self.lock:
            self.issued.append((token, time.monotonic() + self.expires_in))
        out = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        if self.scope:
            out["scope"] = self.scope
        return answer(200, out)

    # -- for the API side and the tests

    def tokens(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.issued]

    def count(self) -> int:
        with self.lock:
            return len(self.issued)

    def valid(self, token: str) -> bool:
        now = time.monotonic()
        with self.lock:
            return any(t == token and now < exp for t, exp in self.issued) and token not in self.revoked

    def revoke(self, token: str) -> None:
        with self.lock:
            self.revoked.add(token)


def bearer_token_of(received: Received) -> str | None:
    auth = received.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def bearer_api(tokens: TokenServer) -> Endpoint:
    """A harness Endpoint answering 200 '{}' to "Authorization: Bearer <currently valid token>"
    and 401 (WWW-Authenticate: Bearer error="invalid_token") to anything else."""
    def respond(received: Received) -> Reply:
        token = bearer_token_of(received)
        if token and tokens.valid(token):
            return Reply(200, b"{}")
        return Reply(401, b'{"error": "invalid_token"}',
                     {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"',
                      "Content-Type": "application/json"})
    return Endpoint(responder=respond)


# --------------------------------------------------------------------------- node / standardwebhooks

def ipv6_loopback() -> bool:
    """Whether [::1] can be bound here (then fixtures listen there too, for "localhost")."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def node_ready() -> str | None:
    """None when `node` and tests/integration/node_modules/standardwebhooks are there; else why not."""
    if not shutil.which("node"):
        return "node is not installed (scripts/deps.sh --test installs nodejs)"
    if not (HERE / "node_modules" / "standardwebhooks").is_dir():
        return ("tests/integration/node_modules/standardwebhooks is missing: run "
                "npm ci --prefix tests/integration (scripts/test does)")
    return None


def run_webhook_verify(captured: list[dict], path: Path) -> subprocess.CompletedProcess:
    """Writes captured requests ({id, timestamp, signature, body_b64, secret}) to path and runs
    `node webhook_verify.js path`; returns the finished process (exit 0 = all verified)."""
    Path(path).write_text(json.dumps(captured, indent=1))
    return subprocess.run(["node", str(HERE / "webhook_verify.js"), str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60, cwd=HERE)

"""A real Helm repository for tests: ``index.yaml`` + chart ``.tgz`` files over HTTP(S).

Served by ``ThreadingHTTPServer`` on 127.0.0.1:0 from a temp folder, with optional basic
or bearer-token auth, ETag + Last-Modified + 304 handling, a request log, and optional
TLS with a CA made by ``openssl`` (``make_tls``, shared with the OCI fixture).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shutil
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import yaml

from tests.support.http_server import QuietHTTPServer

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED_HELM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "helm-index"


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> Tls:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost (needs openssl)."""
    if shutil.which("openssl") is None:
        import pytest

        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=30)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=reconcile test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return Tls(folder / "ca.crt", folder / "server.crt", folder / "server.key")


def make_chart(
    folder: Path, name: str, version: str, app_version: str | None = "1.0.0"
) -> tuple[Path, str]:
    """A chart NAME-VERSION.tgz (Chart.yaml, values.yaml, templates/); returns (path, sha256)."""
    chart = {"apiVersion": "v2", "name": name, "version": version, "type": "application"}
    if app_version is not None:
        chart["appVersion"] = app_version
    files = {
        f"{name}/Chart.yaml": yaml.safe_dump(chart).encode(),
        f"{name}/values.yaml": b"replicaCount: 1\n",
        f"{name}/templates/configmap.yaml": b"apiVersion: v1\nkind: ConfigMap\n",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    tgz = gzip.compress(raw.getvalue(), mtime=0)
    out = folder / f"{name}-{version}.tgz"
    out.write_bytes(tgz)
    return out, hashlib.sha256(tgz).hexdigest()


def index_for(
    folder: Path, charts: Iterable[tuple[str, str, str | None]], base_url: str = ""
) -> bytes:
    """Make the charts and return a go-yaml-style index.yaml for them."""
    entries: dict[str, list[dict[str, object]]] = {}
    for name, version, app in charts:
        path, digest = make_chart(folder, name, version, app)
        entry: dict[str, object] = {
            "apiVersion": "v2",
            "name": name,
            "version": version,
            "created": "2024-01-01T00:00:00Z",
            "digest": digest,
            "urls": [f"{base_url}{path.name}"],
        }
        if app is not None:
            entry["appVersion"] = app
        entries.setdefault(name, []).append(entry)
    doc = {"apiVersion": "v1", "entries": entries, "generated": "2024-01-01T00:00:00Z"}
    return (
        yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, indent=2, width=80)
        .replace("\n  - ", "\n  - ")
        .encode()
    )


class HelmRepo:
    """Serve ``root`` on 127.0.0.1; ``requests`` records (method, path, status)."""

    def __init__(
        self,
        root: Path,
        *,
        basic: tuple[str, str] | None = None,
        token: str | None = None,
        tls: Tls | None = None,
        etag: bool = True,
        last_modified: bool = True,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.basic = basic
        self.token = token
        self.etag = etag
        self.last_modified = last_modified
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._etags: dict[tuple[str, int, int], str] = {}
        repo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                status = repo._serve(self)
                with repo._lock:
                    repo.requests.append(("GET", self.path, status))

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.cert, tls.key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.port = self.server.server_address[1]
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def count(self, path: str = "/index.yaml") -> int:
        with self._lock:
            return sum(1 for _, p, _ in self.requests if p.split("?")[0] == path)

    def statuses(self, path: str = "/index.yaml") -> list[int]:
        with self._lock:
            return [s for _, p, s in self.requests if p.split("?")[0] == path]

    def write_index(self, content: bytes | str) -> None:
        data = content.encode() if isinstance(content, str) else content
        tmp = self.root / ".index.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.root / "index.yaml")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HelmRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request handling
    def _authorized(self, header: str | None) -> bool:
        if self.basic is None and self.token is None:
            return True
        if not header:
            return False
        if self.basic is not None and header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return (user, pw) == self.basic
        if self.token is not None and header.startswith("Bearer "):
            return header[7:] == self.token
        return False

    def _serve(self, h: BaseHTTPRequestHandler) -> int:
        if not self._authorized(h.headers.get("Authorization")):
            return _reply(
                h,
                401,
                b"unauthorized\n",
                {"WWW-Authenticate": 'Basic realm="helm"' if self.basic else "Bearer"},
            )
        rel = h.path.split("?")[0].lstrip("/")
        path = (self.root / rel).resolve()
        if not rel or self.root.resolve() not in path.parents or not path.is_file():
            return _reply(h, 404, b"not found\n", {})
        st = path.stat()
        mtime = st.st_mtime
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._etags.get(key)
        if cached is None:  # a real server computes its ETag once per file version
            data = path.read_bytes()
            cached = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            with self._lock:
                self._etags[key] = cached
        else:
            data = b""
        tag = cached
        headers: dict[str, str] = {}
        if self.etag:
            headers["ETag"] = tag
        if self.last_modified:
            headers["Last-Modified"] = formatdate(mtime, usegmt=True)
        inm = h.headers.get("If-None-Match")
        ims = h.headers.get("If-Modified-Since")
        if self.etag and inm is not None:
            if tag in [t.strip() for t in inm.split(",")]:
                return _reply(h, 304, b"", headers)
        elif self.last_modified and ims:
            try:
                if int(mtime) <= parsedate_to_datetime(ims).timestamp():
                    return _reply(h, 304, b"", headers)
            except (TypeError, ValueError):
                pass
        data = data or path.read_bytes()
        headers["Content-Type"] = (
            "application/x-yaml" if rel.endswith(".yaml") else "application/gzip"
        )
        return _reply(h, 200, data, headers)


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> int:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if status != 304:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if status != 304 and body:
        h.wfile.write(body)
    return status

"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

Three flavours: no auth, htpasswd basic auth (bcrypt), TLS with a CA made in the test.
The process listens on 127.0.0.1:0 and we read the port from its ``listening on`` log line;
waits are bounded and the process is killed at teardown. Artifacts are pushed with
oras-py from a temp dir (it wants files under the current directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.helm_repo import Tls, make_tls

BINARY = "/usr/bin/docker-registry"
USER, PASSWORD = "ci-user", "ci-pass-7f3a"


def have_registry() -> bool:
    return os.access(BINARY, os.X_OK)


class OciRegistry:
    def __init__(
        self, root: Path, *, basic: tuple[str, str] | None = None, tls: Tls | None = None
    ) -> None:
        if not have_registry():
            pytest.skip(f"{BINARY} not installed (apt-get install docker-registry)")
        self.root = root
        self.basic = basic
        self.tls = tls
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": "127.0.0.1:0", "secret": "test-only"},
        }
        if basic is not None:
            import bcrypt

            hashed = bcrypt.hashpw(basic[1].encode(), bcrypt.gensalt(rounds=4)).decode()
            (root / "htpasswd").write_text(f"{basic[0]}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}}
        if tls is not None:
            config["http"]["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
        (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log_path = root / "registry.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen(
            [BINARY, "serve", str(root / "config.yml")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            self.port = self._wait_port(10.0)
        except BaseException:
            self.close()
            raise
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"

    def _wait_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited {self.proc.returncode}:\n{text[-2000:]}"
                )
            time.sleep(0.01)
        raise RuntimeError(f"docker-registry did not start within {timeout}s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    # -- helpers
    def http(self) -> httpx.Client:
        verify = str(self.tls.ca) if self.tls else False
        import ssl

        ctx = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else False
        return httpx.Client(
            base_url=self.url,
            verify=ctx,
            trust_env=False,
            auth=httpx.BasicAuth(*self.basic) if self.basic else None,
        )

    def oras(self):
        import oras.client

        client = oras.client.OrasClient(
            hostname=self.host,
            insecure=self.tls is None,
            auth_backend="basic",
            tls_verify=str(self.tls.ca) if self.tls else False,
        )
        client.auth._auth_config = {"auths": {}, "credsStore": None, "credHelpers": {}}
        if self.basic:
            client.auth.set_basic_auth(*self.basic)
        return client

    def push(
        self,
        repo: str,
        tag: str,
        files: Mapping[str, bytes] | None = None,
        annotations: Mapping[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        """Push an artifact with oras-py.

        oras-py wants files under the current directory; changing the process's cwd is not
        thread-safe, so we write them to a private temp dir and pass absolute paths with
        ``disable_path_validation`` (the layer title is the file's base name either way)."""
        files = files or {"artifact.txt": f"{repo}:{tag}\n".encode()}
        work = Path(tempfile.mkdtemp(dir=workdir or self.root, prefix="push-"))
        try:
            paths = []
            for name, data in files.items():
                path = work / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                paths.append(str(path))
            self.oras().push(
                target=f"{self.host}/{repo}:{tag}",
                files=paths,
                disable_path_validation=True,
                manifest_annotations=dict(annotations or {}),
                quiet=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def tag(self, repo: str, src: str, dst: str) -> None:
        """Give an existing manifest another tag (one PUT, much faster than a push)."""
        accept = "application/vnd.oci.image.manifest.v1+json"
        with self.http() as c:
            r = c.get(f"/v2/{repo}/manifests/{src}", headers={"Accept": accept})
            r.raise_for_status()
            put = c.put(
                f"/v2/{repo}/manifests/{dst}",
                content=r.content,
                headers={"Content-Type": r.headers["Content-Type"]},
            )
            put.raise_for_status()


@contextmanager
def running(root: Path, **kw: object) -> Iterator[OciRegistry]:
    reg = OciRegistry(root, **kw)  # type: ignore[arg-type]
    try:
        yield reg
    finally:
        reg.close()


# Session fixtures: import them into a test module to use them.
@pytest.fixture(scope="session")
def oci_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    with running(tmp_path_factory.mktemp("oci-plain")) as reg:
        yield reg


@pytest.fixture(scope="session")
def oci_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    with running(tmp_path_factory.mktemp("oci-basic"), basic=(USER, PASSWORD)) as reg:
        yield reg


@pytest.fixture(scope="session")
def oci_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    root = tmp_path_factory.mktemp("oci-tls")
    tls = make_tls(root / "pki")
    with running(root / "reg", tls=tls, basic=(USER, PASSWORD)) as reg:
        yield reg

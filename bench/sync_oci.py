"""Benchmark: OCI sync (parallel tags) vs serial one-request-at-a-time baselines, with a
realistic round trip.

Starts Debian's docker-registry on 127.0.0.1, pushes REPOS repositories x TAGS tags under
``bench/`` (the first tag of each with oras-py, the others by re-tagging its manifest).
Every client then talks to it through a small TCP proxy on loopback, in a process of its own
(as the network is: its threads must not contend with the client's), that holds each request
(and each new connection) for ``--latency-ms`` (20 ms by default: a registry in another
region; 0 = direct, where the registry's own CPU is the floor and the ratio says nothing
about the network round trips that dominate in use). Times, in the same run, interleaved
round by round (the order rotates each round):
- baseline "httpx serial": one keep-alive httpx client, ``/v2/_catalog?n=1000``
  pages, then each repository's ``tags/list``, strictly one request after another
  (nothing stored). This is the baseline of the target (issue 5).
- reference "oras-py serial": the library the project prescribes for OCI: the
  catalog through the OrasClient's own requests session (oras has no catalog call), then
  ``OrasClient.get_tags`` per repository, one after another.
- ours: ``sync_registry`` on a fresh SQLite catalog (listing + storing), once per
  ``--workers`` value.
Medians are reported (the machine is shared and noisy), with the minimum alongside.

The registry's own CPU time is read from /proc/<pid>/stat around every run, so the report
also shows the floor the hardware puts under any client: (server CPU + our CPU) / cores.

    python bench/sync_oci.py [--repos 200] [--tags 5] [--repeat 3] [--latency-ms 20] [--workers 4,16]
    python bench/sync_oci.py --latency-ms 0 --workers 2,4,8   # loopback, no latency

Bar (issue 11.5): with 20 ms round trips, 200 repositories x 5 tags, ours <= 0.1x the serial
httpx client.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sqlite3
import threading
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET = 0.1  # with round trips; 0.35 on bare loopback (issue 5)


class LatencyProxy:
    """TCP proxy on 127.0.0.1 adding ``delay`` seconds to every request (each chunk the client
    sends after a pause: one HTTP request on a keep-alive connection) and to each connect."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        time.sleep(self.delay)  # the TCP handshake's round trip
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(server, client, 0.0), daemon=True).start()
        self._pump(client, server, self.delay)

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    with self._lock:
                        self.requests += 1
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.sock.close()


def _serve_proxy(upstream: tuple[str, int], delay: float, conn: Connection) -> None:
    """The proxy's own process: it sends its port, then serves until its parent says stop."""
    proxy = LatencyProxy(upstream, delay)
    conn.send(proxy.port)
    conn.recv()  # any message, or the parent's end closing (EOFError), ends it
    proxy.close()


class ProxyProcess:
    """``LatencyProxy`` in a process of its own, as the network is: its threads must not take
    the interpreter lock from the client being measured (in the client's process, a parallel
    client's 16 threads and the proxy's 32 contend for one lock; a serial client barely does),
    and its CPU is measured apart from the client's."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_proxy, args=(upstream, delay, child), daemon=True)
        self.proc.start()
        if not parent.poll(30):
            self.proc.kill()
            raise SystemExit("the latency proxy did not start within 30 s")
        self.port: int = parent.recv()
        self._conn = parent

    def close(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def serial_httpx(url: str) -> int:
    import httpx

    n = 0
    with httpx.Client(trust_env=False, timeout=30) as c:
        nxt: str | None = f"{url}/v2/_catalog?n=1000"
        repos: list[str] = []
        while nxt:
            r = c.get(nxt)
            r.raise_for_status()
            repos += [x for x in r.json()["repositories"] if x.startswith("bench/")]
            link = r.links.get("next")
            nxt = httpx.URL(url).join(link["url"]).__str__() if link else None
        for repo in repos:
            r = c.get(f"{url}/v2/{repo}/tags/list")
            r.raise_for_status()
            n += len(r.json()["tags"])
    return n


def serial_oras(url: str, host: str) -> int:
    import oras.client
    from requests.compat import urljoin

    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.auth._auth_config = {"auths": {}, "credsStore": None, "credHelpers": {}}  # no ~/.docker
    session = client.session
    nxt: str | None = f"{url}/v2/_catalog?n=1000"
    repos: list[str] = []
    while nxt:
        r = session.get(nxt, timeout=30)
        r.raise_for_status()
        repos += [x for x in r.json()["repositories"] if x.startswith("bench/")]
        link = r.links.get("next")
        nxt = urljoin(url, link["url"]) if link else None
    n = 0
    for repo in repos:
        n += len(client.get_tags(f"{host}/{repo}"))
    return n


class Meter:
    """Wall time, our process CPU and the registry's CPU (utime+stime of its pid)."""

    def __init__(self, pid: int, proxy_pid: int | None = None) -> None:
        self.stat = f"/proc/{pid}/stat"
        self.proxy_stat = f"/proc/{proxy_pid}/stat" if proxy_pid else None
        self.hz = os.sysconf("SC_CLK_TCK")
        self.samples: dict[str, list[tuple[float, float, float, float, float]]] = {}

    def _cpu(self, stat: str | None) -> float:
        if stat is None:
            return 0.0
        with open(stat) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.hz

    def server_cpu(self) -> float:
        return self._cpu(self.stat)

    def proxy_cpu(self) -> float:
        return self._cpu(self.proxy_stat)

    def machine_cpu(self) -> float:
        """Busy CPU seconds of the whole machine (all tenants), from /proc/stat."""
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return (v[0] + v[1] + v[2] + v[7]) / self.hz  # user, nice, system, steal

    def run(self, name: str, fn: Callable[[], object]) -> object:
        m0, s0, p0 = self.machine_cpu(), self.server_cpu(), self.proxy_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        ours, server = time.process_time() - c0, self.server_cpu() - s0
        proxy = self.proxy_cpu() - p0
        other = max(0.0, self.machine_cpu() - m0 - ours - server - proxy)
        self.samples.setdefault(name, []).append((wall, ours, server, other, proxy))
        return out

    def med(self, name: str, i: int = 0) -> float:
        return statistics.median(s[i] for s in self.samples[name])

    def low(self, name: str) -> float:
        return min(s[0] for s in self.samples[name])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=200)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--workers", default="", help="tags fan-out(s) to time, e.g. 2,4,8 (default: ours, and 16)")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added per request by a loopback proxy")
    args = ap.parse_args()
    from reconciler.content import oci, sync_registry
    from tests.support.oci_registry import have_registry, running

    if not have_registry():
        raise SystemExit("docker-registry is not installed")
    workers = [int(w) for w in args.workers.split(",") if w] or sorted({oci.WORKERS, 16})
    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="bench-oci-"))
    expected = args.repos * args.tags
    requests = args.repos + 1  # the catalog (one page) and each repository's tags, by every client
    with running(tmp / "reg") as reg:
        t0 = time.perf_counter()

        def seed(i: int) -> None:
            repo = f"bench/app-{i:03d}"
            reg.push(repo, "v0")
            for t in range(1, args.tags):
                reg.tag(repo, "v0", f"v{t}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(seed, range(args.repos)))
        print(
            f"seeded {args.repos} repositories x {args.tags} tags in "
            f"{time.perf_counter() - t0:.1f} s; {cores} cores; "
            f"{args.repeat} interleaved rounds, medians (min)"
        )
        proxy = ProxyProcess(("127.0.0.1", int(reg.url.rsplit(":", 1)[1])), args.latency_ms / 1000)
        try:
            _measure(args, reg, proxy, workers, cores, tmp, expected, requests)
        finally:
            proxy.close()


def _measure(args: argparse.Namespace, reg: Any, proxy: ProxyProcess, workers: list[int], cores: int, tmp: Path,
             expected: int, requests: int) -> None:
    from reconciler.content import oci, sync_registry

    url, host = f"http://127.0.0.1:{proxy.port}", f"127.0.0.1:{proxy.port}"
    if not args.latency_ms:
        url, host = reg.url, reg.host
    print(f"round trip added per request: {args.latency_ms:g} ms ({url})")
    spec = {
        "endpoint": url,
        "provider": "helm",
        "baseContentPath": "bench",
        "sync": True,
        "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False},
    }
    meter = Meter(reg.proc.pid, proxy.proc.pid if args.latency_ms else None)
    counter = iter(range(1 << 30))

    def ours(w: int) -> None:
        oci.WORKERS = w
        conn = sqlite3.connect(tmp / f"cat{next(counter)}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        try:
            res = sync_registry(conn, "bench", "OciRegistry", spec, {}, base_dir=tmp)
        finally:
            conn.close()
        assert res.status == "Completed", res.message
        assert res.counts["tags"] == expected, res.counts

    def check(n: object) -> None:
        assert n == expected, n

    sides: list[tuple[str, Callable[[], object]]] = [
        ("httpx serial", lambda: check(serial_httpx(url))),
        ("oras-py serial", lambda: check(serial_oras(url, host))),
    ]
    sides += [(f"ours x{w}", lambda w=w: ours(w)) for w in workers]  # type: ignore[misc]
    for _name, fn in sides:  # warm-up: imports, first connections (not recorded)
        fn()
    for r in range(args.repeat):
        k = r % len(sides)
        for name, fn in sides[k:] + sides[:k]:
            meter.run(name, fn)

    base, ref = meter.med("httpx serial"), meter.med("oras-py serial")
    print(
        f"{'':16} {'wall':>16} {'our CPU':>9} {'server CPU':>11} {'server/req':>10}"
        f" {'proxy CPU':>10} {'other load':>11}"
    )
    for name, _ in sides:
        print(
            f"{name:16} {meter.med(name) * 1000:7.0f} ms ({meter.low(name) * 1000:4.0f})"
            f" {meter.med(name, 1) * 1000:6.0f} ms {meter.med(name, 2) * 1000:8.0f} ms"
            f" {meter.med(name, 2) / requests * 1000:7.2f} ms"
            f" {meter.med(name, 4) * 1000:7.0f} ms"
            f" {meter.med(name, 3) * 1000:8.0f} ms"
        )
    print(
        f"({requests} requests per run, the same for every client (no /v2/: ours asks it only when the "
        f"catalog fails); server CPU from /proc/{reg.proc.pid}/stat; the latency proxy runs in a "
        "process of its own, as the network does not share the client's interpreter lock; other load: the rest "
        "of the machine's busy CPU from /proc/stat, other tenants included)"
    )
    best = min((n for n, _ in sides[2:]), key=meter.med)
    target = TARGET if args.latency_ms else 0.35
    bases = [s[0] for s in meter.samples["httpx serial"]]
    for name, _ in sides[2:]:
        ours_t = meter.med(name)
        ratio = ours_t / base
        walls = [s[0] for s in meter.samples[name]]
        mark = "ok" if ratio <= target else "OVER"
        print(
            f"  {name}: ours/httpx-serial {ratio:.3f} [{min(walls) / max(bases):.3f}-{max(walls) / min(bases):.3f}]"
            f" (target <= {target}) {mark};  ours/oras-serial {ours_t / ref:.3f}"
        )
    floor = (meter.med(best, 1) + meter.med(best, 2)) / cores
    server_only = meter.med(best, 2) / cores
    loaded = floor + meter.med(best, 3) / cores
    print(
        f"  floor on {cores} cores for {best} (wall can't go below the CPU it needs / cores):\n"
        f"    server CPU alone {server_only * 1000:.0f} ms -> ratio {server_only / base:.3f};"
        f" + our CPU {floor * 1000:.0f} ms -> {floor / base:.3f};"
        f" + other load {loaded * 1000:.0f} ms -> {loaded / base:.3f}"
    )


if __name__ == "__main__":
    main()

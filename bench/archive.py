"""Public archive and feed under load (a benchmark, not a test).

    .venv/bin/python bench/archive.py [--rate 200] [--seconds 10] [--issues 52]

Seeds a SQLite database with N sent weeks (3 comparisons each), serves the real app with
uvicorn in its own process on a free loopback port, and sends requests at a fixed rate (open
loop: a request is due every 1/rate seconds whether or not earlier ones have answered, so a
slow server shows as latency, not as a lower rate) to `/archive`, `/archive/{week}` and
`/feed.xml`, one path at a time, over keep-alive connections. Prints p50/p99/max latency per
path, counts every status, and fails unless every request answered 200. Target: p99 < 20 ms
at 200 requests a second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

UTC = dt.timezone.utc
TARGET_P99_MS = 20.0


def seed(url: str, issues: int) -> str:
    """N sent weeks ending before now; returns the newest key."""
    from sqlmodel import Session

    from digest.database import make_engine, upgrade
    from digest.edition.compose import compose_issue
    from digest.edition.weeks import Edition
    from digest.settings import load_settings
    from factories import sample_comparisons

    settings = load_settings(database_url=url, base_url="https://digest.example.com",
                             timezone="UTC", secret_key="bench-secret-key-0123456789abcdef")
    engine = make_engine(url)
    upgrade(engine)
    first = Edition.at(dt.datetime(2026, 12, 1, tzinfo=UTC), settings.tz).shift(-issues)
    key = ""
    with Session(engine) as session:
        for n in range(issues):
            edition = first.shift(n)
            start = edition.window(settings.tz).start + dt.timedelta(days=1)
            for comparison in sample_comparisons(3, start=start, prefix=f"b{n}-"):
                session.add(comparison)
            session.commit()
            issue = compose_issue(session, settings, edition.key,
                                  now=edition.window(settings.tz).end)
            issue.status, issue.sent_at = "sent", edition.window(settings.tz).end
            session.add(issue)
            session.commit()
            key = edition.key
    engine.dispose()
    return key


def serve(url: str, port_file: Path) -> subprocess.Popen:
    code = (
        "import socket, uvicorn, sys\n"
        "from digest.database import make_engine\n"
        "from digest.settings import load_settings\n"
        "from digest.web.app import create_app\n"
        f"s = load_settings(database_url={url!r}, base_url='https://digest.example.com',"
        " timezone='UTC', secret_key='bench-secret-key-0123456789abcdef')\n"
        "sock = socket.socket(); sock.bind(('127.0.0.1', 0)); sock.listen(512)\n"
        f"open({str(port_file)!r}, 'w').write(str(sock.getsockname()[1]))\n"
        "app = create_app(s, make_engine(s.database_url))\n"
        "uvicorn.Server(uvicorn.Config(app, log_level='warning', access_log=False,"
        " lifespan='off')).run(sockets=[sock])\n")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def wait_for_port(port_file: Path, proc: subprocess.Popen) -> int:
    for _ in range(600):
        if port_file.exists() and port_file.read_text():
            port = int(port_file.read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                pass
        if proc.poll() is not None:
            raise SystemExit("the server exited before it listened")
        time.sleep(0.05)
    raise SystemExit("the server did not start")


def load(port: int, path: str, rate: float, seconds: float, workers: int = 16):
    """Open-loop requests at `rate` a second for `seconds`; (latencies in ms, status counts)."""
    due: queue.Queue[float | None] = queue.Queue()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while (when := due.get()) is not None:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status = 0
            elapsed = (time.perf_counter() - when) * 1000  # from when it was due
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        when = start + i / rate
        pause = when - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due.put(when)
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    return latencies, statuses


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--issues", type=int, default=52)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        newest = seed(url, args.issues)
        port_file = Path(folder) / "port"
        proc = serve(url, port_file)
        try:
            port = wait_for_port(port_file, proc)
            print(f"{args.issues} sent issues, {args.rate:.0f} requests/s for {args.seconds:.0f} s"
                  f" per path, load average {os.getloadavg()[0]:.2f}")
            ok = True
            for path in ("/archive", f"/archive/{newest}", "/feed.xml"):
                load(port, path, args.rate, 1.0)  # warm: first render, connections
                latencies, statuses = load(port, path, args.rate, args.seconds)
                p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
                good = statuses == Counter({200: int(args.rate * args.seconds)})
                ok &= good and p99 < TARGET_P99_MS
                print(f"{path:<22} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max "
                      f"{max(latencies):7.2f} ms  mean {statistics.fmean(latencies):6.2f} ms  "
                      f"answers {dict(statuses)}  {'ok' if good and p99 < TARGET_P99_MS else 'MISSED'}")
            print(f"load average after: {os.getloadavg()[0]:.2f}; target p99 < {TARGET_P99_MS} ms")
            return 0 if ok else 1
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())

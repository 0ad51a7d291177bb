"""Crash safety with real processes: `digest send` runs in a child process against a real
database and the real Resend / Postmark providers pointed at a loopback sink; the sink kills the
child with SIGKILL at chosen points (after the Nth request reached it: before processing it,
before answering, or just after), a test sends SIGTERM during a 429 backoff, or the database
starts failing; then the send is resumed.

* Resend (idempotent): the sink de-duplicates by `Idempotency-Key` like Resend does (and refuses a
  key reused with another payload, like Resend's `invalid_idempotent_request`): after the
  resume every active subscriber has received the issue exactly once.
* Postmark (no idempotency key): nobody ever receives it twice silently; only the batches whose
  request was really out are reported uncertain (exit 4), and go out again only with
  `--retry-uncertain`. Batches claimed ahead of the request, or waiting out a 429, are sent
  normally by the next run.
* A database that refuses writes (read-only, disk full) ends the run with one line and exit 8,
  and the next run resumes without sending anyone twice.

Every child is forked from one launcher process that has imported the CLI already (run as a
script, this file is that launcher), so a kill and a resume cost milliseconds, not the two
seconds of a fresh interpreter: twenty kill points fit in a few seconds.
"""

from __future__ import annotations

import json
import os
import sys


def _launcher() -> None:
    """Read one JSON command a line from stdin: fork a child that waits for "go", then runs
    `digest` with the given arguments and environment, its output in the given files; report
    `{"pid": ...}` at once and `{"status": ...}` (exit code, or minus the signal) when it ends.

    The child lowers the provider's batch limit (so a few dozen subscribers make several
    requests) and may be told to fail every database write from the Nth on, as a full disk
    does (`fail_writes`: {"after": N, "persist": bool})."""
    from digest.cli import app  # noqa: F401  (imported once here, inherited by every child)
    from digest.cli import send as send_command
    from digest.delivery.providers.registry import build

    _warm_up()

    for line in sys.stdin:
        command = json.loads(line)
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(go_write)
            os.environ.update(command["env"])
            for fd, path in ((1, command["out"]), (2, command["err"])):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            os.read(go_read, 1)
            code = 1
            try:
                limit = command["limit"]

                def small_batches(conf):
                    provider = build(conf, timeout=(5.0, 20.0))
                    type(provider).batch_limit = limit
                    return provider

                send_command.build_provider = small_batches
                if command.get("fail_writes"):
                    _fail_writes(**command["fail_writes"])
                app(command["args"], prog_name="digest")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(go_read)
        print(json.dumps({"pid": pid}), flush=True)
        sys.stdin.readline()  # "go": the test has armed the sink with this pid
        os.write(go_write, b"g")
        os.close(go_write)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"status": code}), flush=True)


def _warm_up() -> None:
    """Import what a send imports lazily, and read the migration scripts once, so each forked
    child starts sending at once."""
    import importlib

    for name in ("digest.delivery.send", "digest.delivery.workers", "digest.edition.compose",
                 "digest.delivery.providers.postmark", "digest.delivery.providers.resend",
                 "digest.settings", "subscribers.lifecycle", "sqlalchemy.dialects.sqlite",
                 "sqlalchemy.dialects.postgresql.psycopg", "psycopg", "alembic.command",
                 "alembic.runtime.migration", "alembic.script", "rich.progress"):
        importlib.import_module(name)
    from alembic.script import ScriptDirectory

    from digest.database import alembic_config

    ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _fail_writes(after: int, persist: bool) -> None:
    """Every INSERT/UPDATE/DELETE from the `after`-th on (or that one alone) fails as a full disk
    fails, with the driver's own error, which SQLAlchemy wraps as it would the real one."""
    import sqlite3

    import psycopg
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    writes = [0]

    def refuse(conn, cursor, statement, params, context, executemany):
        if statement.lstrip()[:6].upper() not in ("INSERT", "UPDATE", "DELETE"):
            return
        writes[0] += 1
        if writes[0] == after or (persist and writes[0] > after):
            if conn.dialect.name == "sqlite":
                raise sqlite3.OperationalError("database or disk is full")
            raise psycopg.errors.DiskFull(
                'could not extend file "base/16384/2619": No space left on device')

    event.listen(Engine, "before_cursor_execute", refuse)


if __name__ == "__main__":
    _launcher()
    raise SystemExit(0)

import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import select as io_select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from email.utils import parseaddr  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import select  # noqa: E402

from delivery_support import REAL_IDENTITY, add_subscribers, make_issue  # noqa: E402
from digest.delivery import ledger  # noqa: E402
from digest.database.models import Delivery, Issue  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve()
SUBSCRIBERS = 240
BATCH = 20  # 12 requests for a full send
CHILD_TIMEOUT = 60
EXIT_DATABASE = 8
# Each seed is one sequence of kills (mode, request number): seed 3 kills once before an answer
# and once after one; seed 18 once before an answer and once with the request lost.
# DIGEST_TEST_CRASH_SEEDS=1,2,3 adds seeds for a longer soak.
EXTRA_SEEDS = [int(s) for s in os.environ.get("DIGEST_TEST_CRASH_SEEDS", "").split(",") if s.strip()]


class Sink(ThreadingHTTPServer):
    """Answers `/emails/batch` as Resend and `/email/batch` as Postmark; records every message it
    accepted (by subject and address, so several issues can share it), every address whose
    request reached it at all, and kills the child when armed."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.lock = threading.Lock()
        self.requests = 0
        self.delivered: Counter[tuple[str, str]] = Counter()  # (subject, address) -> copies
        self.seen: set[tuple[str, str]] = set()  # in a request that reached the sink
        self.by_key: dict[str, tuple[str, bytes]] = {}  # idempotency key -> (body hash, answer)
        self.replayed = 0  # requests answered from the idempotency cache
        self.busy_for: float | None = None  # answer 429 with this Retry-After while set
        self.refused = 0  # 429s answered
        self.kill_at: int | None = None
        self.kill_mode = "after"
        self.pid: int | None = None
        self.killed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def arm(self, after_requests: int, mode: str, pid: int) -> None:
        with self.lock:
            self.kill_at, self.kill_mode, self.pid = self.requests + after_requests, mode, pid
            self.killed.clear()

    def disarm(self) -> None:
        with self.lock:
            self.kill_at = None

    def kill_child(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # it had already finished
                return
            self.killed.set()

    def copies(self, subject: str) -> Counter[str]:
        with self.lock:
            return Counter({a: n for (s, a), n in self.delivered.items() if s == subject})

    def reached(self, subject: str) -> set[str]:
        with self.lock:
            return {a for s, a in self.seen if s == subject}


class SinkHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # otherwise ~40 ms a request
    server: Sink

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        sink = self.server
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) < length:  # the sender died while sending it: never arrived
            return
        messages = json.loads(body)
        with sink.lock:
            sink.requests += 1
            for message in messages:
                sink.seen.add(_subject_and_address(message))
            trigger = sink.kill_at is not None and sink.requests == sink.kill_at
            mode = sink.kill_mode
            busy = sink.busy_for
        if trigger and mode == "lost":  # the request reached us, nothing was processed
            sink.kill_child()
            return
        if busy is not None:
            with sink.lock:
                sink.refused += 1
            self.answer(429, b'{"message": "rate limited"}', {"Retry-After": f"{busy:g}"})
            return
        if self.path == "/emails/batch":
            status, answer = self.resend(body, messages)
        elif self.path == "/email/batch":
            status, answer = self.postmark(messages)
        else:
            status, answer = 404, b'{"message": "not found"}'
        if trigger and mode == "before":  # processed, but the answer never reaches the sender
            sink.kill_child()
            return
        self.answer(status, answer)
        if trigger:  # "after": the answer went out; the sender may or may not record it
            sink.kill_child()

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass

    def resend(self, body: bytes, emails: list | None = None) -> tuple[int, bytes]:
        key = self.headers.get("Idempotency-Key")
        digest_ = hashlib.sha256(body).hexdigest()
        with self.server.lock:
            if key and key in self.server.by_key:
                seen, answer = self.server.by_key[key]
                if seen != digest_:
                    return 409, json.dumps({"name": "invalid_idempotent_request",
                                            "message": "key reused with another payload"}).encode()
                self.server.replayed += 1
                return 200, answer
            if emails is None:
                emails = json.loads(body)
            for item in emails:
                self.server.delivered[_subject_and_address(item)] += 1
            answer = json.dumps({"data": [{"id": str(uuid.uuid4())} for _ in emails]}).encode()
            if key:
                self.server.by_key[key] = (digest_, answer)
        return 200, answer

    def postmark(self, messages: list) -> tuple[int, bytes]:
        results = []
        with self.server.lock:
            for message in messages:
                self.server.delivered[_subject_and_address(message)] += 1
                results.append({"ErrorCode": 0, "Message": "OK", "To": message["To"],
                                "MessageID": str(uuid.uuid4()),
                                "SubmittedAt": "2026-11-23T09:00:00Z"})
        return 200, json.dumps(results).encode()


def _subject_and_address(message: dict) -> tuple[str, str]:
    if "To" in message:  # Postmark
        return message["Subject"], parseaddr(message["To"])[1]
    return message["subject"], parseaddr(message["to"][0])[1]  # Resend


@pytest.fixture
def sink():
    server = Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- the children ---------------------------------------------------------------------------------

@dataclass
class Child:
    pid: int
    out: Path
    err: Path


class Launcher:
    """The test's side of `_launcher`: start a child (stopped until `go`), then wait for it."""

    def __init__(self, tmp: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1]), env.get("PYTHONPATH", "")])
        self.tmp, self.runs = tmp, 0
        self.process = subprocess.Popen([sys.executable, str(HERE)], env=env, cwd=tmp,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _answer(self, child: int | None = None) -> dict:
        """The launcher's next line (never more than one is outstanding, so `select` on the
        pipe is exact); a child that hangs is killed and the test fails."""
        ready, _, _ = io_select.select([self.process.stdout], [], [], CHILD_TIMEOUT)
        if not ready:
            if child is not None:
                os.kill(child, signal.SIGKILL)
            pytest.fail(f"no answer from the launcher within {CHILD_TIMEOUT} s")
        line = self.process.stdout.readline()
        assert line, "the launcher died"
        return json.loads(line)

    def start(self, env: dict[str, str], *args: str, limit: int = BATCH,
              fail_writes: dict | None = None) -> Child:
        self.runs += 1
        out, err = self.tmp / f"run{self.runs}.out", self.tmp / f"run{self.runs}.err"
        self.process.stdin.write(json.dumps({
            "args": list(args), "env": env, "limit": limit, "fail_writes": fail_writes,
            "out": str(out), "err": str(err)}) + "\n")
        self.process.stdin.flush()
        return Child(self._answer()["pid"], out, err)

    def go(self, child: Child) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def wait(self, child: Child) -> tuple[int, dict | None, str]:
        code = self._answer(child.pid)["status"]
        out, err = child.out.read_text(), child.err.read_text(errors="replace")
        report = json.loads(out) if code >= 0 and out.strip().startswith("{") else None
        return code, report, err

    def run(self, env: dict[str, str], *args: str, **options) -> tuple[int, dict | None, str]:
        child = self.start(env, *args, **options)
        self.go(child)
        return self.wait(child)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(CHILD_TIMEOUT)


@pytest.fixture
def launcher(tmp_path):
    started = Launcher(tmp_path)
    yield started
    started.close()


def child_env(db_url: str, provider: str, sink: Sink, tmp_path: Path) -> dict[str, str]:
    """A child's whole environment: this one without its DIGEST_* settings, plus the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_DATABASE_URL": db_url, "DIGEST_PROVIDER": provider,
        "DIGEST_PROVIDER_URL": sink.url, "DIGEST_PROVIDER_TOKEN": "loopback-token",
        "DIGEST_SECRET_KEY": "crash-test-secret-0123456789abcdef",
        "DIGEST_TIMEZONE": "UTC", **REAL_IDENTITY,  # a real provider: the preflight applies
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), env.get("PYTHONPATH", "")]),
    })
    return env


def send_args(week: str = "2026-W47", *extra: str) -> list[str]:
    return ["send", "--week", week, "--format", "json", *extra]


def crash_repeatedly(launcher: Launcher, env, sink: Sink, rng: random.Random,
                     kills: int) -> list[str]:
    """Start the send, let the sink kill it `kills` times at random points; returns the modes."""
    modes = []
    for _ in range(kills):
        mode = rng.choice(["before", "after", "lost"])
        child = launcher.start(env, *send_args())
        sink.arm(rng.randint(1, 4), mode, child.pid)
        launcher.go(child)
        code, report, err = launcher.wait(child)
        sink.disarm()
        if code != -signal.SIGKILL:  # finished before the Nth request came
            assert report is not None, err
            break
        modes.append(mode)
    return modes


def ledger_rows(engine, issue_id: int | None = None) -> list[tuple[str, str]]:
    query = ledger.states_query(Subscriber.email).join(Subscriber,
                                                       Subscriber.id == Delivery.subscriber_id)
    if issue_id is not None:
        query = query.where(Delivery.issue_id == issue_id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def issue_state(engine, issue_id: int) -> tuple[str, str]:
    """(status, reason) of the issue, read in a transaction that ends at once (on SQLite every
    transaction takes the write lock, and a child would wait for it)."""
    with engine.connect() as conn:
        return tuple(conn.execute(select(Issue.status, Issue.status_reason)
                                  .where(Issue.id == issue_id)).one())


def everyone(n: int = SUBSCRIBERS) -> set[str]:
    return {f"reader{i}@example.com" for i in range(1, n + 1)}


# --- kill -9 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [3] + EXTRA_SEEDS)
def test_idempotent_provider_delivers_exactly_once_after_kills(db_url, engine, session, sink,
                                                               launcher, tmp_path, seed):
    add_subscribers(engine, SUBSCRIBERS)
    add_subscribers(engine, 10, status="unsubscribed", start=1000)
    issue = make_issue(session)
    env = child_env(db_url, "resend", sink, tmp_path)

    modes = crash_repeatedly(launcher, env, sink, random.Random(seed), kills=2)
    assert modes, "the sink never killed the sender"
    code, report, err = launcher.run(env, *send_args())

    assert code == 0, err
    assert report["status"] == "sent" and report["sent"] == SUBSCRIBERS, report
    if "before" in modes:  # a batch processed but unanswered was sent again with its key
        assert sink.replayed >= 1
    copies = sink.copies(issue.subject)
    assert set(copies) == everyone()
    assert set(copies.values()) == {1}, [e for e, n in copies.items() if n > 1]
    assert {status for _, status in ledger_rows(engine)} == {"sent"}


@pytest.mark.parametrize("seed", [18] + EXTRA_SEEDS)
def test_non_idempotent_provider_never_delivers_twice_silently(db_url, engine, session, sink,
                                                               launcher, tmp_path, seed):
    add_subscribers(engine, SUBSCRIBERS)
    issue = make_issue(session)
    env = child_env(db_url, "postmark", sink, tmp_path)

    modes = crash_repeatedly(launcher, env, sink, random.Random(seed), kills=2)
    assert modes, "the sink never killed the sender"
    code, report, err = launcher.run(env, *send_args())

    # Nobody got it twice, everyone the ledger calls sent got it exactly once.
    copies = sink.copies(issue.subject)
    assert max(copies.values()) == 1
    rows = ledger_rows(engine)
    sent = {e for e, status in rows if status == "sent"}
    uncertain = {e for e, status in rows if status == "uncertain"}
    assert all(copies[e] == 1 for e in sent)
    assert sent | uncertain == everyone()
    if "before" in modes or "lost" in modes:  # killed awaiting an answer: in doubt
        assert uncertain
    if uncertain:  # reported and left for the operator: not complete, exit 4
        assert code == 4 and report["uncertain"] == len(uncertain), err
        assert "--retry-uncertain" in report["reason"]
        before = sink.copies(issue.subject)
        code, report, err = launcher.run(env, *send_args("2026-W47", "--retry-uncertain"))
        resent = sink.copies(issue.subject) - before
        assert set(resent) == uncertain and set(resent.values()) == {1}
    assert code == 0, err
    assert report["status"] == "sent" and report["sent"] == SUBSCRIBERS
    copies = sink.copies(issue.subject)
    assert set(copies) == everyone()
    # Any second copy went only to addresses the operator chose to retry.
    twice = {e for e, n in copies.items() if n > 1}
    assert twice <= uncertain


POINTS = 20
POINT_SUBSCRIBERS = 60
POINT_BATCH = 10  # six requests a send


def kill_points(seed: int = 20) -> list[tuple[int, str]]:
    """(request number, mode) for each kill: the sink kills the sender when that request of
    the send reaches it, before processing it ("lost"), having processed it but before
    answering ("before"), or just after answering ("after")."""
    rng = random.Random(seed)
    requests = POINT_SUBSCRIBERS // POINT_BATCH
    points = []
    for _ in range(POINTS):
        mode = rng.choice(["lost", "before", "after"])
        # Killed just after answering the last request, the sender may finish and exit before
        # the signal lands: that point would test nothing, and fail as "not killed".
        points.append((rng.randint(1, requests - 1 if mode == "after" else requests), mode))
    return points


@pytest.mark.parametrize("seed", [20] + EXTRA_SEEDS)
def test_kills_at_twenty_points_leave_only_the_requests_in_flight_uncertain(
        db_url, engine, session, sink, launcher, tmp_path, seed):
    """kill -9 at 20 seeded points of a send (a fresh issue each, the same subscribers) through
    a provider without idempotency keys, then resume. After each resume nobody got the issue
    twice, everyone either got it or is reported uncertain, and only recipients whose request
    had reached the provider are uncertain: never the batch the sender had claimed ahead
    (two claimed at a time), which goes out normally. The one exception is a kill just after
    an answer, when the next request may have been marked started and not have arrived yet:
    at most one batch."""
    add_subscribers(engine, POINT_SUBSCRIBERS)
    env = child_env(db_url, "postmark", sink, tmp_path)
    for index, (request_no, mode) in enumerate(kill_points(seed)):
        issue = make_issue(session, key=f"2026-W{index + 1:02d}")
        child = launcher.start(env, *send_args(issue.key), limit=POINT_BATCH)
        sink.arm(request_no, mode, child.pid)
        launcher.go(child)
        code, _report, err = launcher.wait(child)
        sink.disarm()
        point = f"point {index}: request {request_no}, {mode}"
        assert code == -signal.SIGKILL, (point, err)
        reached = sink.reached(issue.subject)

        code, report, err = launcher.run(env, *send_args(issue.key), limit=POINT_BATCH)
        rows = ledger_rows(engine, issue.id)
        sent = {e for e, state in rows if state == "sent"}
        uncertain = {e for e, state in rows if state == "uncertain"}
        copies = sink.copies(issue.subject)
        assert set(copies.values()) == {1}, (point, copies)  # nobody twice
        assert sent | uncertain == everyone(POINT_SUBSCRIBERS) and not sent & uncertain, point
        assert sent <= set(copies) and set(copies) | uncertain == everyone(POINT_SUBSCRIBERS)
        assert code == (4 if uncertain else 0), (point, err)
        assert report["uncertain"] == len(uncertain), point
        # Only what was in flight is uncertain: at most the two batches a sender can have
        # started or answered without recording, and none that never reached the provider,
        # except possibly the one started as an answer came back.
        assert len(uncertain) <= 2 * POINT_BATCH, (point, sorted(uncertain))
        never_reached = uncertain - reached
        if mode == "after":
            assert len(never_reached) <= POINT_BATCH, (point, sorted(never_reached))
        else:
            assert not never_reached, (point, sorted(never_reached))
            assert uncertain, point  # the request the kill interrupted is in doubt


# --- SIGTERM in a 429 backoff ---------------------------------------------------------------------

def wait_until(condition, *, timeout: float = 15.0) -> None:
    """Poll the database for what a child has done (the only wait here: a child's pace)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the child never got there"
        time.sleep(0.02)


def test_sigterm_while_waiting_out_a_429_leaves_nothing_uncertain(db_url, engine, session, sink,
                                                                   launcher, tmp_path):
    """The provider answers 429 with Retry-After: 600; the sender waits, and is stopped by
    SIGTERM during the wait. The provider took nothing: the next run sends every batch
    normally (none uncertain), each recipient once."""
    add_subscribers(engine, 60)
    issue = make_issue(session)
    env = child_env(db_url, "postmark", sink, tmp_path)
    sink.busy_for = 600
    child = launcher.start(env, *send_args(), limit=20)
    launcher.go(child)

    def backing_off() -> bool:  # its lease now covers the 600 s wait
        with engine.connect() as conn:
            until = conn.execute(select(Issue.sender_lease_until)
                                 .where(Issue.id == issue.id)).scalar_one()
        return until is not None and until > dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            minutes=8)

    wait_until(backing_off)
    os.kill(child.pid, signal.SIGTERM)
    code, _report, err = launcher.wait(child)
    assert code == -signal.SIGTERM, err
    assert sink.refused >= 1 and not sink.copies(issue.subject)

    sink.busy_for = None
    code, report, err = launcher.run(env, *send_args(), limit=20)
    assert (code, report["uncertain"], report["sent"]) == (0, 0, 60), err
    copies = sink.copies(issue.subject)
    assert set(copies) == everyone(60) and set(copies.values()) == {1}


# --- database errors ------------------------------------------------------------------------------

def assert_one_line(err: str, *needles: str) -> None:
    """The error is one line on stderr naming what matters, with no traceback and no SQL (the
    preflight's warnings about the test's settings may come before it)."""
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: database "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    for leak in ("Traceback", "[SQL", "[parameters", "WHERE", "SET ", "reader"):
        assert leak not in err, (leak, err)


def read_only(db_url: str) -> tuple[str, str]:
    """The same database, opened so that every write is refused; and the name to expect."""
    if db_url.startswith("sqlite"):
        path = db_url.removeprefix("sqlite:///")
        return f"sqlite:///file:{path}?mode=ro&uri=true", path
    # A URL object, not string concatenation: a server reached by its socket folder already has
    # a query (`?host=/tmp/...`, as the throwaway test server's does).
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    read_only_url = url.update_query_dict({"options": "-c default_transaction_read_only=on"})
    return read_only_url.render_as_string(hide_password=False), url.database


def test_a_read_only_database_is_one_line_and_a_later_run_sends(db_url, engine, session, sink,
                                                                launcher, tmp_path):
    add_subscribers(engine, 40)
    issue = make_issue(session)
    env = child_env(db_url, "resend", sink, tmp_path)
    url, name = read_only(db_url)

    code, _report, err = launcher.run(env | {"DIGEST_DATABASE_URL": url}, *send_args())
    assert code == EXIT_DATABASE, err
    assert_one_line(err, name, "read", "2026-W47 was not changed")
    assert issue_state(engine, issue.id)[0] == "ready" and not sink.copies(issue.subject)
    # Composing a week's issue is a write too, outside any send: the same one line.
    code, _report, err = launcher.run(env | {"DIGEST_DATABASE_URL": url}, *send_args("2026-W48"))
    assert code == EXIT_DATABASE, err
    assert_one_line(err, name, "read", "rolled back")

    code, report, err = launcher.run(env, *send_args())
    assert (code, report["sent"]) == (0, 40), err
    assert set(sink.copies(issue.subject).values()) == {1}


@pytest.mark.parametrize("persist", [True, False], ids=["disk-stays-full", "one-write-fails"])
def test_a_database_failing_mid_send_is_one_line_and_the_next_run_resumes(
        db_url, engine, session, sink, launcher, tmp_path, persist):
    """Writes start failing in the middle of a send (the disk filled up). The run ends with one
    line and exit 8. When every later write fails too, the pause cannot be written and the
    issue still shows `sending`; the next run on this host takes it over at once. Either way
    it resumes, and with the provider's idempotency keys everyone gets the issue exactly once."""
    add_subscribers(engine, SUBSCRIBERS)
    issue = make_issue(session)
    env = child_env(db_url, "resend", sink, tmp_path)

    code, _report, err = launcher.run(env, *send_args(),
                                      fail_writes={"after": 12, "persist": persist})
    assert code == EXIT_DATABASE, err
    full = "database or disk is full" if db_url.startswith("sqlite") else "No space left on device"
    assert_one_line(err, full, "the send of 2026-W47 stopped", "digest send --week 2026-W47")
    assert 0 < len(sink.copies(issue.subject)) < SUBSCRIBERS  # it stopped in the middle
    status, reason = issue_state(engine, issue.id)
    if persist:
        assert status == "sending" and "may still show as being sent" in err
    else:
        assert status == "paused" and "is paused" in err
        assert reason.startswith("stopped by a database error: ") and reason.endswith(full)

    code, report, err = launcher.run(env, *send_args())
    assert code == 0, err
    assert report["status"] == "sent" and report["sent"] == SUBSCRIBERS
    copies = sink.copies(issue.subject)
    assert set(copies) == everyone() and set(copies.values()) == {1}

"""Exactly once, with real processes: four of them fire for the same week at the same moment
against one database (SQLite, and PostgreSQL when configured). Two are cron lines (`digest send`
without `--week`) and two are the scheduler's job run by hand (`python -m schedules.weekly`).
Exactly one issue row is written, every active subscriber gets the issue once (counted in the
outbox's `.eml` files, its index of every message written, and the ledger), and the other three
exit 0 saying the week is already sent or being sent. Before that, the same four fire together
for a week long past its deadline: it is recorded `missed` once, and nothing is sent.

Each child imports everything first and then, before each firing, says so on one pipe and
blocks reading that firing's own pipe; the test closes it when all four are ready, so they fire
at the same moment.

Run as a script, this file is the child:
`python test_exactly_once.py READY_FD MODE STEP:GO_FD...` with MODE `cron` or `scheduler` and
each STEP `now` (fire as MODE does) or an ISO time (the scheduler's job for that time). It prints
one JSON list: the exit code and summary of each firing.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # the child process
    import contextlib
    import io
    import json

    # Everything slow to import is imported before the barrier, so the firings really coincide.
    import alembic.runtime.migration  # noqa: F401  (the schema check)
    import digest.edition.compose  # noqa: F401  (rendering: Jinja2, MJML, premailer)
    import digest.delivery.providers.outbox  # noqa: F401
    import digest.delivery.send  # noqa: F401
    import schedules.weekly
    from digest.cli import app

    ready_fd, mode = int(sys.argv[1]), sys.argv[2]
    done = []
    for step in sys.argv[3:]:
        when, go_fd = step.rsplit(":", 1)
        os.write(ready_fd, b"r")
        os.read(int(go_fd), 1)  # returns (empty) when the test closes the other end: go
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if when != "now":
                code = schedules.weekly.main(["--format", "json", "--at", when])
            elif mode == "cron":
                try:
                    app(["send", "--format", "json"], prog_name="digest")
                    code = 0
                except SystemExit as exc:
                    code = exc.code or 0
            else:
                code = schedules.weekly.main(["--format", "json"])
        done.append({"code": code, "summary": json.loads(out.getvalue())})
    print(json.dumps(done))
    raise SystemExit(0)

import datetime as dt  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlmodel import Session, select as sql_select  # noqa: E402

from delivery_support import add_subscribers  # noqa: E402
from digest.database.models import Delivery, Issue  # noqa: E402
from digest.edition.weeks import last_complete_edition  # noqa: E402
from factories import sample_comparisons, store  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve()
UTC = dt.timezone.utc
ACTIVE = 150  # the outbox writes ~100 a second: the winner holds the issue for a while
READY_TIMEOUT = 60.0  # seconds for four children to import everything
RUN_TIMEOUT = 90.0  # seconds for the firings themselves


def _zone(now: dt.datetime) -> str:
    """A zone in which `now` is well away from the Monday midnight that starts a new week, so
    every child, whatever second it reads the clock, fires for the same edition."""
    for name in ("Europe/Berlin", "America/New_York", "Pacific/Auckland"):
        local = now.astimezone(ZoneInfo(name))
        since_monday = (dt.timedelta(days=local.weekday())
                        + (local - local.replace(hour=0, minute=0, second=0, microsecond=0)))
        if dt.timedelta(minutes=15) < since_monday < dt.timedelta(days=7, minutes=-15):
            return name
    raise AssertionError("unreachable: the zones are hours apart")


@pytest.fixture
def world(db_url, engine, tmp_path):
    """Comparisons in the last complete week (by the real clock: the children use it), active
    subscribers plus some who must get nothing, and the environment of a cron/scheduler host."""
    now = dt.datetime.now(UTC)
    zone = _zone(now)
    edition = last_complete_edition(now, ZoneInfo(zone))
    window = edition.window(ZoneInfo(zone))
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(3, start=window.start + dt.timedelta(days=1)))
    add_subscribers(engine, ACTIVE)
    add_subscribers(engine, 10, status="unsubscribed", start=ACTIVE + 1)
    add_subscribers(engine, 10, status="pending", start=ACTIVE + 11)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_DATABASE_URL": db_url, "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DIGEST_TIMEZONE": zone, "DIGEST_BASE_URL": "https://digest.example.test",
        "DIGEST_SECRET_KEY": "test-secret-key-0123456789abcdef",
        # Fires every minute, and a week may start its send until 240 hours after it was due:
        # the real clock's firing is always inside the deadline.
        "DIGEST_SCHEDULE": "* * * * *", "DIGEST_SEND_DEADLINE": "hours",
        "DIGEST_SEND_DEADLINE_HOURS": "240",
    })
    return {"env": env, "key": edition.key, "outbox": tmp_path / "outbox", "cwd": tmp_path}


class Children:
    """Four children started together, released together before each of their firings."""

    def __init__(self, world, modes: list[str], steps: list[str]) -> None:
        self.ready_r, ready_w = os.pipe()
        self.go = [os.pipe() for _ in steps]
        args = [f"{step}:{read}" for step, (read, _) in zip(steps, self.go)]
        keep = (ready_w, *(read for read, _ in self.go))
        self.procs = [subprocess.Popen([sys.executable, str(HERE), str(ready_w), mode, *args],
                                       pass_fds=keep, env=world["env"], cwd=world["cwd"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for mode in modes]
        for fd in keep:  # the children hold them now
            os.close(fd)
        self.step = 0

    def release(self) -> None:
        """Wait until every child is ready for its next firing, then let them all go at once."""
        ready, deadline = 0, time.monotonic() + READY_TIMEOUT
        while ready < len(self.procs):
            if any(p.poll() is not None for p in self.procs):
                self.fail("a child exited before the barrier")
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("the children did not get ready in time")
            readable, _, _ = select.select([self.ready_r], [], [], min(left, 1.0))
            if readable:
                ready += len(os.read(self.ready_r, 16))
        os.close(self.go[self.step][1])  # every child's read returns now
        self.step += 1

    def results(self) -> list[list[dict]]:
        """Each child's firings: [{"code": exit code, "summary": its JSON}, ...]."""
        outputs = []
        for proc in self.procs:
            try:
                out, err = proc.communicate(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.fail("a child did not finish in time")
            if proc.returncode != 0:
                self.fail(f"a child failed ({proc.returncode}): {err[-3000:]}")
            outputs.append(json.loads(out))
        os.close(self.ready_r)
        return outputs

    def fail(self, why: str) -> None:
        for proc in self.procs:
            proc.kill()
        details = [proc.communicate()[1][-1500:] for proc in self.procs]
        raise AssertionError(f"{why}: {details}")


def test_four_processes_firing_together_act_exactly_once(world, engine):
    key = world["key"]
    long_ago = (dt.datetime.now(UTC) - dt.timedelta(days=20)).replace(second=0, microsecond=0)
    children = Children(world, ["cron", "scheduler", "cron", "scheduler"],
                        [long_ago.isoformat(), "now"])
    children.release()  # 1: a week long past its deadline (a restored snapshot, say)
    children.release()  # 2: the week that is due now
    firings = children.results()
    missed = [firing[0] for firing in firings]
    sends = [firing[1] for firing in firings]

    # 1: recorded missed exactly once (exit 7 for the recorder, 0 for the others), nothing sent.
    assert sorted(f["code"] for f in missed) == [0, 0, 0, 7], missed
    assert {f["summary"]["result"] for f in missed} == {"missed"}
    assert sum(f["summary"]["recorded"] for f in missed) == 1
    old_key = missed[0]["summary"]["issue"]
    assert old_key != key

    # 2: one sends, three report the week already sent or being sent, all exit 0.
    assert [f["code"] for f in sends] == [0, 0, 0, 0], sends
    assert {f["summary"]["issue"] for f in sends} == {key}
    outcomes = Counter(f["summary"]["result"] for f in sends)
    assert outcomes["sent"] == 1, outcomes
    assert outcomes["already-sent"] + outcomes["being-sent"] == 3, outcomes
    for f in sends:
        if f["summary"]["result"] != "sent":
            assert f["summary"]["message"].startswith(("already sent", "already being sent by"))

    with Session(engine) as session:
        issues = {i.key: i for i in session.exec(sql_select(Issue)).all()}
        assert {k: i.status for k, i in issues.items()} == {old_key: "missed", key: "sent"}
        assert "never sent late" in issues[old_key].status_reason
        rows = session.exec(sql_select(Delivery.issue_id, Delivery.subscriber_id,
                                       Delivery.status)).all()
        active = set(session.exec(sql_select(Subscriber.email)
                                  .where(Subscriber.status == "active")).all())
        assert session.exec(sql_select(func.count()).select_from(Subscriber)).one() == ACTIVE + 20
    assert {issue_id for issue_id, _, _ in rows} == {issues[key].id}
    assert len(rows) == ACTIVE == len({subscriber for _, subscriber, _ in rows})
    assert {status for _, _, status in rows} == {"sent"}

    assert [p.name for p in world["outbox"].iterdir()] == [key]
    folder = world["outbox"] / key
    assert len(list(folder.glob("*.eml"))) == ACTIVE
    written = Counter(json.loads(line)["to"]
                      for line in (folder / "index.jsonl").read_text().splitlines() if line)
    assert set(written) == active and set(written.values()) == {1}

"""`digest subscribers ...` and `digest serve` through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from digest.cli import common
from digest.database import make_engine
from subscribers.lifecycle import email_hash
from subscribers.models import Subscriber, Suppression
from subscribers.tokens import Signer


@pytest.fixture
def db(env):
    """The test's own engine. Every read is a short session: on SQLite an open transaction would
    hold the write lock the CLI needs."""
    engine = make_engine(env["DIGEST_DATABASE_URL"])
    yield engine
    engine.dispose()


def subscribers(db) -> dict[str, str]:
    with Session(db) as session:
        return {s.email: s.status for s in session.exec(select(Subscriber))}


def suppressions(db) -> list[tuple[str, str]]:
    with Session(db) as session:
        return [(s.email_hash, s.reason) for s in session.exec(select(Suppression))]


def insert(db, **fields) -> None:
    with Session(db) as session:
        session.add(Subscriber(**fields))
        session.commit()


def test_add_pending_sends_a_confirmation_through_the_outbox(cli, db, settings):
    result = cli("subscribers", "add", "New@Example.org", "--name", "Nia")
    assert result.exit_code == 0, result.stderr
    assert "added new@example.org (pending): confirmation email sent through outbox" in result.out
    assert subscribers(db) == {"new@example.org": "pending"}
    [eml] = (Path(settings.outbox_dir) / "confirm").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "new@example.org"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Hi Nia," in text
    token = re.search(r"/confirm/(\S+)", text).group(1)
    signer = Signer(settings.signing_key())
    with Session(db) as session:
        assert signer.verify_id(token, "confirm") == session.exec(select(Subscriber)).one().id


def test_add_confirmed_and_refusals(cli, db, settings):
    assert cli("subscribers", "add", "ann@example.org", "--confirmed").exit_code == 0
    assert subscribers(db) == {"ann@example.org": "active"}
    assert not (Path(settings.outbox_dir) / "confirm").exists(), "--confirmed mails nothing"
    again = cli("subscribers", "add", "ANN@example.org")
    assert again.exit_code == 1 and "ann@example.org is already on the list" in again.err
    bad = cli("subscribers", "add", "ann@@example.org")
    assert bad.exit_code == 1 and "is not a valid email address" in bad.err
    assert "Traceback" not in bad.stderr + bad.stdout


def test_import_reports_bad_rows_and_keeps_the_good_ones(cli, db, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("email,name,status\nann@example.org,Ann,\nbroken,,\nBo@Example.org,Bo,pending\n"
                    "ann@EXAMPLE.org,,\ncy@example.org,,maybe\n", encoding="utf-8")
    result = cli("subscribers", "import", str(path))
    assert result.exit_code == 2
    assert f"invalid: {path}:3: 'broken' is not a valid email address" in result.err
    assert f"invalid: {path}:6: status 'maybe'" in result.err
    assert f"note: {path}:5: ann@example.org already appears on line 2" in result.err
    assert "2 added, 0 updated, 0 unchanged, 2 invalid row(s) not imported" in result.out
    assert subscribers(db) == {"ann@example.org": "active", "bo@example.org": "pending"}

    path.write_text("address,name\nann@example.org,Ann\n", encoding="utf-8")
    unreadable = cli("subscribers", "import", str(path))
    assert unreadable.exit_code == 2 and "no 'email' column" in unreadable.err
    assert cli("subscribers", "import", str(tmp_path / "nope.csv")).exit_code == 2


def test_export_list_and_filters(cli, db):
    for address, flag in [("ann@example.org", "--confirmed"), ("bo@example.org", "--confirmed")]:
        assert cli("subscribers", "add", address, flag).exit_code == 0
    insert(db, email="gone@example.org", status="bounced", name="=1+1")

    exported = cli("subscribers", "export")
    assert exported.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["email"], r["status"]) for r in rows] == [
        ("ann@example.org", "active"), ("bo@example.org", "active"), ("gone@example.org", "bounced")]
    assert rows[2]["name"] == "'=1+1"

    as_json = json.loads(cli("subscribers", "export", "--format", "json", "--status", "active").stdout)
    assert [r["email"] for r in as_json] == ["ann@example.org", "bo@example.org"]

    listed = json.loads(cli("subscribers", "list", "--status", "bounced", "--format", "json").stdout)
    assert [(r["email"], r["status"]) for r in listed] == [("gone@example.org", "bounced")]
    table = cli("subscribers", "list")
    assert table.exit_code == 0 and "ann@example.org" in table.out and "3 subscriber(s)" in table.out
    wrong = cli("subscribers", "list", "--status", "gone")
    assert wrong.exit_code == 1 and "unknown status 'gone'" in wrong.err


def test_remove_keeps_a_hash_and_reactivate_overrides(cli, db):
    insert(db, email="bounced@example.org", status="bounced", name="Bea")
    removed = cli("subscribers", "remove", "Bounced@Example.org")
    assert removed.exit_code == 0, removed.stderr
    assert "erased bounced@example.org" in removed.out and "reason: bounced" in removed.out
    assert subscribers(db) == {}
    assert suppressions(db) == [(email_hash("bounced@example.org"), "bounced")]

    refused = cli("subscribers", "add", "bounced@example.org", "--confirmed")
    assert refused.exit_code == 1 and "suppressed" in refused.err and "reactivate" in refused.err
    assert subscribers(db) == {}
    assert cli("subscribers", "remove", "bounced@example.org").exit_code == 1

    back = cli("subscribers", "reactivate", "bounced@example.org")
    assert back.exit_code == 0 and "reactivated bounced@example.org (active)" in back.out
    assert subscribers(db) == {"bounced@example.org": "active"}
    assert suppressions(db) == []
    assert cli("subscribers", "reactivate", "never@example.org").exit_code == 1


# --- digest serve ------------------------------------------------------------------------------------

def _serve_env(env: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    out.update(env)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.slow
def test_serve_refuses_a_public_host_without_a_secret(tmp_path):
    """A subprocess, so that a broken check shows as a failure, not as a server that never ends."""
    result = subprocess.run(
        [sys.executable, "-m", "digest.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=_serve_env({"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}"}),
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    message = " ".join(result.stderr.split())
    assert "DIGEST_SECRET_KEY is missing" in message and "listens beyond localhost" in message
    assert "secrets.token_urlsafe(32)" in message


@pytest.mark.slow
def test_serve_runs_the_app_on_loopback(env, tmp_path, settings, db):
    process = subprocess.Popen(
        [sys.executable, "-m", "digest.cli", "serve", "--port", "0"],
        env=_serve_env(env), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        base = None
        for line in process.stdout:  # uvicorn logs the port it bound to
            match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if match:
                base = match.group(1)
                break
        assert base, "the server did not start"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/subscribe").status_code == 200
            answer = http.post("/subscribe", data={"email": "live@example.org"})
            assert answer.status_code == 200 and "set-cookie" not in answer.headers
        assert subscribers(db) == {"live@example.org": "pending"}
    finally:
        process.terminate()  # a graceful shutdown: uvicorn lets background tasks finish
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()
    # the confirmation goes out after the response (so timing reveals nothing about the address)
    assert [p.name.split("-", 1)[1] for p in (Path(settings.outbox_dir) / "confirm").glob("*.eml")] \
        == ["live@example.org.eml"]

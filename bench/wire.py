"""How many bytes the demo week's message is on the wire (a measurement, not a timing).

    .venv/bin/python bench/wire.py          # add --json for the figures as JSON

Composes the demo week on SQLite as the real pipeline does (import -> select -> render), then
builds one subscriber's message the way the SMTP provider sends it when the server offers
8BITMIME (and, for comparison, quoted-printable): its HTML part, text part and whole message in
bytes, links filled in. Also renders 40 comparisons (the test factories) and reports the HTML
part, which must stay under Gmail's clipping limit. Targets: the message <= 45,000 bytes in
8bit; the 40-comparison HTML part < 102,400 bytes.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the factories for the 40 comparisons

import send as send_bench  # noqa: E402  (bench/send.py: the database and the demo issue)

WIRE_TARGET = 45_000
HTML_BUDGET = 102_400


def demo_message(db: Path) -> dict:
    """The demo week's message for its first subscriber, in 8bit and quoted-printable."""
    from sqlalchemy import text

    from digest.delivery.mime import MessageTemplate
    from digest.delivery.send import issue_parts
    from digest.settings import load_settings

    engine = send_bench._database(db, 1)
    settings = load_settings(database_url=f"sqlite:///{db}", provider="smtp",
                             smtp_url="smtp://127.0.0.1:2525",
                             secret_key="bench-secret-key-0123456789abcdef",
                             base_url="https://digest.example.com", timezone="UTC")
    issue_id, _html = send_bench._issue(engine, settings)
    parts = issue_parts(engine, issue_id, settings)
    with engine.connect() as conn:
        sid, address, name = conn.execute(text(
            "SELECT id, email, name FROM subscribers ORDER BY id LIMIT 1")).one()
    recipient = parts.recipients.batch([(1, sid, address, name)])[0]
    figures = {}
    for label, eight_bit in (("8bit", True), ("quoted_printable", False)):
        message = MessageTemplate(parts.letter, eight_bit=eight_bit).render(recipient)
        figures[f"wire_{label}"] = len(message)
        if eight_bit:
            parsed = email.message_from_bytes(message, policy=email.policy.default)
            for part in parsed.walk():
                kind = part.get_content_type()
                if kind in ("text/html", "text/plain"):
                    figures[kind.split("/")[1]] = len(part.get_payload(decode=True))
    engine.dispose()
    return figures


def forty() -> dict:
    from digest.edition.render import render_issue
    from digest.edition.weeks import Edition
    from digest.settings import load_settings
    from factories import sample_comparisons

    conf = load_settings(base_url="https://digest.example.com", timezone="UTC")
    edition = Edition(2026, 47)
    issue = render_issue(sample_comparisons(40), edition=edition,
                         window=edition.window(conf.tz), settings=conf)
    return {"forty_html": issue.html_bytes, "forty_measured": issue.measured_bytes,
            "forty_shown": issue.shown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="digest-bench-wire-") as tmp:
        figures = demo_message(Path(tmp) / "demo.db")
    figures.update(forty())
    ok = figures["wire_8bit"] <= WIRE_TARGET and figures["forty_measured"] < HTML_BUDGET
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"demo week, one subscriber: HTML part {figures['html']:,} bytes, text part "
              f"{figures['plain']:,} bytes; on the wire {figures['wire_8bit']:,} bytes in 8bit "
              f"(target <= {WIRE_TARGET:,}), {figures['wire_quoted_printable']:,} "
              f"quoted-printable")
        print(f"40 comparisons: {figures['forty_shown']} shown in full, HTML part "
              f"{figures['forty_html']:,} bytes ({figures['forty_measured']:,} with the longest "
              f"links allowed; budget < {HTML_BUDGET:,})")
        print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

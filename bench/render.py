"""How long composing an issue and personalising one message take (a benchmark, not a test).

    .venv/bin/python bench/render.py

Compose = load the week's comparisons from SQLite, render (Jinja2 -> MJML -> CSS inliner) and
insert the issue, rolled back after each run so every run composes from scratch.
Personalise = fill one subscriber's values into an issue split once at its placeholders.
Targets: compose 6 or 12 comparisons under 40 ms; personalise one message under 25 us.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test factories build realistic comparisons

from sqlmodel import Session  # noqa: E402

from digest.edition.compose import IssueTemplate, compose_issue  # noqa: E402
from digest.database import make_engine, upgrade  # noqa: E402
from digest.edition.personalize import (CLICK_READER, NAME, PREFERENCES_URL,  # noqa: E402
                                        UNSUBSCRIBE_URL, VIEW_URL, VOTE_URL)
from digest.edition.render import render_issue  # noqa: E402
from digest.edition.select import load_edition  # noqa: E402
from digest.settings import load_settings  # noqa: E402
from digest.edition.weeks import Edition  # noqa: E402
from factories import sample_comparisons, store  # noqa: E402

UTC = dt.timezone.utc
COMPOSE_TARGET_MS = 40.0
PERSONALISE_TARGET_US = 25.0
RUNS = 25
# One reader's values, every slot an issue can have (the vote, preference and click slots came
# after this benchmark was written; without them the fill raised KeyError).
VALUES = {UNSUBSCRIBE_URL: "https://digest.example.com/u/81234-7.6740b3f1.6e1f2a." + "Qx" * 11,
          VIEW_URL: "https://digest.example.com/issues/2026-W47",
          VOTE_URL: "https://digest.example.com/vote/81234-7.6740b3f1.6e1f2a." + "Qx" * 11,
          PREFERENCES_URL: "https://digest.example.com/p/81234.6740b3f1.6e1f2a." + "Qx" * 11,
          CLICK_READER: "81234.6740b3f1", NAME: "Ada Lovelace"}


def _median_ms(action, runs: int = RUNS) -> float:
    action()  # warm caches: templates compiled, CSS rules parsed
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _verdict(value: float, target: float) -> str:
    return "ok" if value < target else "OVER TARGET"


def main() -> None:
    settings = load_settings(base_url="https://digest.example.com", timezone="Europe/Berlin")
    edition = Edition(2026, 47)
    window = edition.window(settings.tz)
    after = window.end + dt.timedelta(hours=9)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}; "
          f"{RUNS} runs each, median")
    issue = None
    with tempfile.TemporaryDirectory() as folder:
        for n in (6, 12):
            engine = make_engine(f"sqlite:///{folder}/bench-{n}.db")
            upgrade(engine)
            with Session(engine, expire_on_commit=False) as session:
                store(session, sample_comparisons(n, start=window.start + dt.timedelta(hours=9)))
            with Session(engine) as session:
                comparisons = load_edition(session, window)

                def compose() -> None:
                    compose_issue(session, settings, edition.key, now=after)
                    session.rollback()

                def render() -> None:
                    render_issue(comparisons, edition=edition, window=window, settings=settings)

                compose_ms, render_ms = _median_ms(compose), _median_ms(render)
                issue = compose_issue(session, settings, edition.key, now=after)
                size = len(issue.html.encode())
                session.rollback()
            engine.dispose()
            print(f"compose {n:2d} comparisons: {compose_ms:6.1f} ms  "
                  f"(render alone {render_ms:5.1f} ms; HTML {size:,} bytes)  "
                  f"target < {COMPOSE_TARGET_MS:.0f} ms: "
                  f"{_verdict(compose_ms, COMPOSE_TARGET_MS)}")
    assert issue is not None
    template = IssueTemplate.of(issue)
    number = 20_000
    per_message = min(timeit.repeat(lambda: template.fill(VALUES), number=number, repeat=5))
    html_only = min(timeit.repeat(lambda: template.html.fill(VALUES), number=number, repeat=5))
    us, html_us = per_message / number * 1e6, html_only / number * 1e6
    print(f"personalise one message (HTML + text, 12 comparisons): {us:5.1f} us  "
          f"(HTML alone {html_us:4.1f} us)  target < {PERSONALISE_TARGET_US:.0f} us: "
          f"{_verdict(us, PERSONALISE_TARGET_US)}")


if __name__ == "__main__":
    main()

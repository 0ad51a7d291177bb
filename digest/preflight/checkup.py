"""Everything `digest doctor` runs, in the order an operator fixes things."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.delivery.complaints import recent_history
from digest.preflight.content import check_links, default_week
from digest.preflight.identity import identity_checks
from digest.preflight.report import Check, Report, ok, warn
from digest.settings import Settings


def complaint_history_check(session: Session) -> Check:
    history = recent_history(session)
    if history.too_high:
        return warn("audience.complaints", history.describe(),
                    "look at how people joined the list and what the last issues promised; "
                    "remove long-inactive readers")
    if not history.issues:
        return ok("audience.complaints", "no issue sent yet")
    return ok("audience.complaints", f"{history.rate:.2%} over the last "
                                     f"{len(history.issues)} issue(s)")


def run_checks(settings: Settings, engine: Engine | None, *, now: dt.datetime,
               network: bool = True, week: str | None = None) -> Report:
    groups: list[list[Check]] = [identity_checks(settings)]
    if network:
        from digest.preflight.dns import dns_checks
        from digest.preflight.providers import provider_checks
        from digest.preflight.site import check_healthz

        groups += [provider_checks(settings), dns_checks(settings), [check_healthz(settings)]]
    if engine is not None:
        with Session(engine) as session:
            groups.append([check_links(session, settings, week or default_week(settings, now)),
                           complaint_history_check(session)])
    return Report.of(*groups)

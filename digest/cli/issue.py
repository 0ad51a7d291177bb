"""`digest preview`: an edition's email as a sample subscriber gets it, or a local preview site."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from sqlmodel import Session

from digest.cli.common import engine, err_console, reports_errors, settings
from digest.database import utcnow
from digest.edition.render import BUDGET_BYTES


def register(app: typer.Typer) -> None:
    @app.command("preview")
    @reports_errors
    def preview(
        week: Optional[str] = typer.Option(
            None, "--week", metavar="YYYY-Www",
            help="the edition (ISO week); default: this week, or the newest with content"),
        out: Optional[Path] = typer.Option(None, "--out", help="write to this file, not stdout"),
        text: bool = typer.Option(False, "--text", help="the plain-text part instead of HTML"),
        serve: bool = typer.Option(False, "--serve",
                                   help="run a local preview site (desktop, phone, text)"),
        port: int = typer.Option(8010, "--port", min=1, max=65535, help="port for --serve"),
        segment: Optional[str] = typer.Option(
            None, "--segment", metavar="CATEGORIES[,ship-only]",
            help='one segment\'s edition, e.g. "Developer Tools,Code Review,ship-only"'),
    ) -> None:
        """Show an issue as a sample subscriber gets it; never composes or sends anything."""
        from digest.edition.preview import build_preview, default_week
        from digest.web.preview import serve as serve_site
        from digest.edition.weeks import Edition
        from subscribers.preferences import Preferences

        conf = settings()
        if serve:
            path = f"week/{Edition.parse(week).key}" if week else ""
            err_console.print(f"Preview at http://127.0.0.1:{port}/{path} (Ctrl-C to stop)",
                              highlight=False)
            serve_site(engine(), conf, port=port)
            return
        now = utcnow()
        with Session(engine()) as session:
            key = Edition.parse(week).key if week else default_week(session, conf, now).key
            wanted = Preferences.parse(segment) if segment else None
            result = build_preview(session, conf, key, now=now, segment=wanted)
            from digest.preflight.content import LINK_FIX, unlinked, week_comparisons

            missing = unlinked(week_comparisons(session, conf, key))
        body = result.text if text else result.html
        if out is None:
            typer.echo(body, nl=False)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(body, encoding="utf-8")
        state = f"composed, {result.issue.status}" if result.stored else "draft, not composed yet"
        size = f"HTML {result.measured_bytes:,} of {BUDGET_BYTES:,} bytes"
        where = f" -> {out}" if out else ""
        who = f" for {wanted.describe()}" if segment else ""
        err_console.print(f"{key}{who} ({state}): {result.issue.subject!r} · {size}{where}",
                          highlight=False, markup=False)
        if missing:
            err_console.print(f"warning: {len(missing)} comparison(s) have no link on their "
                              f"card: {', '.join(c.slug for c in missing)}; {LINK_FIX}",
                              highlight=False, markup=False, soft_wrap=True)

"""The operator's preview page: an edition at desktop and phone widths, its text part and its
size against the budget, before it goes out. Mounted at `/preview` in the web app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from urllib.parse import quote

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from jinja2 import Environment
from sqlalchemy.engine import Engine
from sqlalchemy import text
from sqlmodel import Session

from digest.database import utcnow
from digest.edition.preview import SAMPLE_NAME, NothingToPreview, Preview, build_preview, default_week
from digest.edition.render import BUDGET_BYTES
from digest.edition.select import editions_with_content
from digest.edition.weeks import Edition
from digest.errors import DigestError
from digest.settings import Settings
from subscribers.preferences import Preferences, parse_categories

_PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview {{ key }} · {{ site_name }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { margin: 0; font: 14px/1.5 -apple-system, Roboto, Helvetica, Arial, sans-serif;
        background: #f4f5f8; color: #1f2937; }
 header { display: flex; flex-wrap: wrap; gap: 12px 24px; align-items: center;
          padding: 14px 24px; background: #111827; color: #f9fafb; }
 header h1 { margin: 0; font-size: 16px; }
 header a { color: #c7d2fe; }
 header nav { display: flex; gap: 16px; }
 header form { margin: 0; display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
 select, button { font: inherit; min-height: 32px; }
 button { padding: 4px 14px; border: 0; border-radius: 6px; background: #4f46e5; color: #fff;
          font-weight: 700; cursor: pointer; }
 a:focus-visible, button:focus-visible, select:focus-visible {
   outline: 3px solid #a5b4fc; outline-offset: 2px; }
 main { padding: 20px 24px 40px; }
 dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 6px 16px;
      margin: 0 0 20px; max-width: 1200px; }
 dt { color: #5f6776; } dd { margin: 0; overflow-wrap: anywhere; }
 .meter { width: 320px; max-width: 100%; height: 10px; background: #e5e7eb; border-radius: 5px;
          overflow: hidden; display: inline-block; vertical-align: middle; margin-right: 8px; }
 .meter span { display: block; height: 100%; background: #4f46e5; }
 .meter.over span { background: #dc2626; }
 .frames { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
 figure { margin: 0; max-width: 100%; } figcaption { color: #5f6776; margin-bottom: 6px; }
 iframe { border: 1px solid #d1d5db; border-radius: 8px; background: #fff; height: 1400px;
          max-width: calc(100% - 2px); }
 pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #fff;
       border: 1px solid #d1d5db; border-radius: 8px; padding: 16px; max-width: 78ch;
       font: 13px/1.45 ui-monospace, Menlo, Consolas, monospace; }
 .tag { display: inline-block; padding: 1px 8px; border-radius: 9px; background: #e0e7ff;
        color: #3730a3; font-size: 12px; }
 .warn { background: #fef3c7; color: #92400e; }
 @media (max-width: 600px) {
   header, main { padding-left: 12px; padding-right: 12px; }
   dl { grid-template-columns: minmax(0, 1fr); gap: 2px; }
   dd { margin-bottom: 8px; }
 }
</style></head><body>
<header>
 <h1>{{ site_name }} · issue preview</h1>
 <form action="{{ root }}/go" method="get"><label>Week
  <select name="week">
  {% for w in weeks %}<option value="{{ w }}"{% if w == key %} selected{% endif %}>{{ w }}</option>{% endfor %}
  </select></label> <label>Readers
  <select name="segment">
  {% for value, label in segments %}<option value="{{ value }}"{% if value == segment %} selected{% endif %}>{{ label }}</option>{% endfor %}
  </select></label> <button type="submit">Show</button></form>
 {% if prev or next %}<nav aria-label="Neighbouring weeks">
 {% if prev %}<a href="{{ root }}/week/{{ prev }}{{ query }}">&larr; {{ prev }}</a>{% endif %}
 {% if next %}<a href="{{ root }}/week/{{ next }}{{ query }}">{{ next }} &rarr;</a>{% endif %}</nav>{% endif %}
</header>
<main>
{% if error %}<p class="tag warn">{{ error }}</p>{% else %}
<dl>
 <dt>Edition</dt><dd>{{ key }} · {{ window }}
   {% if stored %}<span class="tag">composed · {{ status }}</span>
   {% else %}<span class="tag warn">draft · not composed yet, content may still change</span>{% endif %}</dd>
 <dt>Subject</dt><dd><strong>{{ subject }}</strong></dd>
 <dt>Preheader</dt><dd>{{ preheader }}</dd>
 {% if note %}<dt>Note</dt><dd>{{ note }}</dd>{% endif %}
 <dt>HTML size</dt><dd><span class="meter{% if over %} over{% endif %}"><span style="width: {{ pct }}%"></span></span>
   {{ "{:,}".format(measured) }} of {{ "{:,}".format(budget) }} bytes with placeholders at their longest
   ({{ "{:,}".format(filled) }} bytes for this sample reader){% if over %} · over budget: Gmail will clip it{% endif %}</dd>
 <dt>Sample reader</dt><dd>{{ sample_name }}</dd>
</dl>
<div class="frames">
 <figure><figcaption>Desktop · 800 px</figcaption>
  <iframe title="Desktop rendering" src="{{ root }}/week/{{ key }}/email.html{{ query }}" width="800" sandbox="allow-popups"></iframe></figure>
 <figure><figcaption>Phone · 375 px</figcaption>
  <iframe title="Phone rendering" src="{{ root }}/week/{{ key }}/email.html{{ query }}" width="375" sandbox="allow-popups"></iframe></figure>
 <figure><figcaption>Plain text</figcaption><pre>{{ text }}</pre></figure>
</div>
{% endif %}
</main></body></html>
""")


_SEGMENTS_SQL = text("""
SELECT segment, MIN(categories), MAX(CASE WHEN ship_only THEN 1 ELSE 0 END), COUNT(*)
FROM subscribers WHERE status = 'active' GROUP BY segment ORDER BY COUNT(*) DESC, segment
""")


def reader_segments(session: Session) -> list[tuple[str, str]]:
    """(value, label) for the segment picker: everyone, then each segment active readers form,
    largest first. The value is the `--segment` form the preview reads back."""
    options = [("", "Everyone (the whole issue)")]
    for key, categories, ship_only, readers in session.execute(_SEGMENTS_SQL):
        prefs = Preferences(parse_categories(categories or ""), bool(ship_only))
        if key == Preferences().key:
            continue
        value = ",".join([*prefs.categories, *(["ship-only"] if prefs.ship_only else [])])
        options.append((value, f"{prefs.describe()} · {readers:,} reader(s)"))
    return options


def _query(segment: str) -> str:
    return f"?segment={quote(segment)}" if segment else ""


def create_app(engine: Engine, settings: Settings, *,
               clock: Callable[[], dt.datetime] = utcnow, root: str = "") -> FastAPI:
    """The preview site: `/` (this week or the newest with content), `/week/{key}`, and the
    sample reader's `/week/{key}/email.html` and `/week/{key}/email.txt`. `root` is the path
    the site is mounted under (`/preview` inside the main web app)."""
    app = FastAPI(title=f"{settings.site_name} preview", docs_url=None, redoc_url=None,
                  openapi_url=None)

    def _preview(key: str, segment: str = "") -> Preview:
        try:
            wanted = Preferences.parse(segment) if segment else None
            with Session(engine) as session:
                return build_preview(session, settings, key, now=clock(), segment=wanted)
        except NothingToPreview as exc:
            raise HTTPException(404, str(exc)) from None
        except DigestError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/")
    def index() -> RedirectResponse:
        with Session(engine) as session:
            week = default_week(session, settings, clock())
        return RedirectResponse(f"{root}/week/{week.key}", status_code=303)

    @app.get("/go")
    def go(week: str, segment: str = "") -> RedirectResponse:
        try:
            return RedirectResponse(f"{root}/week/{Edition.parse(week).key}{_query(segment)}",
                                    status_code=303)
        except DigestError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/week/{key}", response_class=HTMLResponse)
    def week_page(key: str, segment: str = "") -> HTMLResponse:
        try:
            edition = Edition.parse(key)
        except DigestError as exc:
            raise HTTPException(400, str(exc)) from None
        with Session(engine) as session:
            weeks = [w.key for w in editions_with_content(session, settings.tz)]
            segments = reader_segments(session)
        if edition.key not in weeks:
            weeks = sorted([*weeks, edition.key])
        if segment and segment not in dict(segments):
            segments.append((segment, segment))
        context = dict(site_name=settings.site_name, key=edition.key, weeks=weeks, root=root,
                       prev=edition.shift(-1).key, next=edition.shift(1).key, error=None,
                       segments=segments, segment=segment, query=_query(segment))
        try:
            preview = _preview(edition.key, segment)
        except HTTPException as exc:
            return HTMLResponse(_PAGE.render(context, error=exc.detail),
                                status_code=exc.status_code)
        measured = preview.measured_bytes
        return HTMLResponse(_PAGE.render(
            context, stored=preview.stored, status=preview.issue.status,
            window=edition.window(settings.tz).label(), subject=preview.issue.subject,
            preheader=preview.issue.preheader, note=preview.issue.status_reason,
            measured=measured, filled=preview.html_bytes, budget=BUDGET_BYTES,
            pct=min(100, round(100 * measured / BUDGET_BYTES)), over=measured > BUDGET_BYTES,
            sample_name=SAMPLE_NAME, text=preview.text))

    @app.get("/week/{key}/email.html", response_class=HTMLResponse)
    def email_html(key: str, segment: str = "") -> HTMLResponse:
        return HTMLResponse(_preview(key, segment).html)

    @app.get("/week/{key}/email.txt", response_class=PlainTextResponse)
    def email_text(key: str, segment: str = "") -> PlainTextResponse:
        return PlainTextResponse(_preview(key, segment).text)

    return app


def serve(engine: Engine, settings: Settings, *, port: int, host: str = "127.0.0.1") -> None:
    """Run the preview site until interrupted. It shows unsent content, so each request is
    checked like the web app's `/preview` (local operators only, unless DIGEST_PREVIEW_PUBLIC),
    with proxy headers believed only from DIGEST_TRUSTED_PROXIES, not uvicorn's own list."""
    import uvicorn

    from digest.web.access import OperatorOnly

    site = OperatorOnly(create_app(engine, settings), settings, public=settings.preview_public)
    uvicorn.run(site, host=host, port=port, log_level="warning", proxy_headers=False)

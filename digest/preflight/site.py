"""The public web app answers: every unsubscribe and view-in-browser link depends on it."""

from __future__ import annotations

import requests

from digest.delivery.providers.http import USER_AGENT
from digest.preflight.report import Check, fail, ok
from digest.settings import Settings

TIMEOUT = 10.0


def check_healthz(settings: Settings) -> Check:
    url = f"{settings.base_url}/healthz"
    fix = ("run `digest serve` behind your https proxy at DIGEST_BASE_URL (unsubscribe links "
           "must work the moment the mail lands)")
    try:
        response = requests.get(url, timeout=TIMEOUT, allow_redirects=False,
                                headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    except requests.RequestException as exc:
        return fail("site.healthz", f"GET {url} failed ({type(exc).__name__})", fix,
                    setting="DIGEST_BASE_URL")
    try:
        healthy = response.status_code == 200 and response.json().get("status") == "ok"
    except (ValueError, AttributeError):
        healthy = False
    if not healthy:
        return fail("site.healthz", f"GET {url} answered HTTP {response.status_code} "
                                    f"{response.text[:120]!r}", fix, setting="DIGEST_BASE_URL")
    return ok("site.healthz", f"{url} answers", setting="DIGEST_BASE_URL")

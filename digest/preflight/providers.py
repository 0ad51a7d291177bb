"""Whether the provider credentials work and may send, asked through each provider's own
read-only API; nothing is sent. The From domain is checked as verified where the API says.

* Postmark: `GET /server` with the server token (401 for a bad one; `DeliveryType` `Sandbox`
  accepts mail and delivers none), and `GET /message-streams/{stream}` (the broadcast stream the
  digest goes out on must exist and not be archived).
* SendGrid: `GET /v3/scopes`; the key must hold `mail.send`.
* Mailgun: `GET /v4/domains/{domain}`; its `state` must be `active`.
* Resend: `GET /domains`; the From domain must be listed `verified` with sending enabled. A
  key restricted to sending cannot list domains (401 `restricted_api_key`): it can send, so
  that is a warning that the domain could not be checked.
* SMTP: connect, EHLO, STARTTLS offered (unless `smtps://`), AUTH accepted; QUIT, no mail.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from urllib.parse import quote

import requests

from digest.delivery.providers.http import USER_AGENT
from digest.preflight.identity import from_domain
from digest.preflight.report import Check, fail, ok, warn
from digest.settings import Settings

TIMEOUT = 10.0
DEFAULT_URLS = {"postmark": "https://api.postmarkapp.com", "sendgrid": "https://api.sendgrid.com",
                "mailgun": "https://api.mailgun.net", "resend": "https://api.resend.com"}
TOKEN_FIX = "set DIGEST_PROVIDER_TOKEN to a working key ({what})"


def _get(settings: Settings, path: str, *, headers: dict[str, str] | None = None,
         auth: tuple[str, str] | None = None) -> requests.Response:
    base = (settings.provider_url or DEFAULT_URLS[settings.provider]).rstrip("/")
    return requests.get(base + path, timeout=TIMEOUT, auth=auth, allow_redirects=False,
                        headers={"User-Agent": USER_AGENT, "Accept": "application/json",
                                 **(headers or {})})


def _json(response: requests.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {"data": data}


def _token(settings: Settings) -> str:
    return settings.provider_token.get_secret_value().strip() if settings.provider_token else ""


def _unexpected(name: str, response: requests.Response) -> Check:
    return fail(name, f"{response.request.method} {response.url} answered HTTP "
                      f"{response.status_code}: {response.text[:200]!r}",
                "check DIGEST_PROVIDER_URL and the provider's status page",
                setting="DIGEST_PROVIDER_URL")


def _refused(name: str, provider: str, response: requests.Response, what: str) -> Check:
    detail = _json(response)
    message = detail.get("Message") or detail.get("message") or response.text[:200]
    return fail(name, f"{provider} refused the key (HTTP {response.status_code}: {message})",
                TOKEN_FIX.format(what=what), setting="DIGEST_PROVIDER_TOKEN")


def check_postmark(settings: Settings) -> list[Check]:
    headers = {"X-Postmark-Server-Token": _token(settings)}
    response = _get(settings, "/server", headers=headers)
    if response.status_code in (401, 403, 422):
        return [_refused("provider.credentials", "postmark", response,
                         "the Server API token from the server's API Tokens tab")]
    if response.status_code != 200:
        return [_unexpected("provider.credentials", response)]
    server = _json(response)
    checks = [ok("provider.credentials", f"postmark server {server.get('Name', '?')!r}")]
    if str(server.get("DeliveryType", "Live")).lower() == "sandbox":
        return checks + [fail("provider.can-send", "the postmark server is a Sandbox server: "
                                                   "it accepts mail and delivers none",
                              "use the token of a Live server", setting="DIGEST_PROVIDER_TOKEN")]
    stream = settings.postmark_stream
    response = _get(settings, f"/message-streams/{quote(stream, safe='')}", headers=headers)
    data = _json(response)
    if response.status_code != 200:
        why = data.get("Message", response.status_code)
        return checks + [fail("provider.can-send", f"postmark has no message stream {stream!r} "
                                                   f"on this server ({why})",
                              "create a Broadcasts stream in the server, or set "
                              "DIGEST_POSTMARK_STREAM to its ID", setting="DIGEST_POSTMARK_STREAM")]
    if data.get("ArchivedAt"):
        return checks + [fail("provider.can-send", f"the postmark stream {stream!r} is archived",
                              "unarchive it or use another stream",
                              setting="DIGEST_POSTMARK_STREAM")]
    kind = data.get("MessageStreamType", "?")
    checks.append(ok("provider.can-send", f"stream {stream!r} ({kind})")
                  if kind == "Broadcasts" else
                  warn("provider.can-send", f"stream {stream!r} is a {kind} stream",
                       "newsletters belong on a Broadcasts stream (Postmark's terms)",
                       setting="DIGEST_POSTMARK_STREAM"))
    checks.append(ok("provider.domain", "a server token cannot read sender signatures; the "
                                        "DNS checks cover the From domain"))
    return checks


def check_sendgrid(settings: Settings) -> list[Check]:
    response = _get(settings, "/v3/scopes", headers={"Authorization": f"Bearer {_token(settings)}"})
    if response.status_code in (401, 403):
        return [_refused("provider.credentials", "sendgrid", response,
                         "an API key with the Mail Send permission")]
    if response.status_code != 200:
        return [_unexpected("provider.credentials", response)]
    scopes = _json(response).get("scopes") or []
    checks = [ok("provider.credentials", f"sendgrid key with {len(scopes)} scope(s)")]
    if "mail.send" not in scopes:
        checks.append(fail("provider.can-send", "the sendgrid key lacks the mail.send scope",
                           "give the API key the Mail Send permission (or create one with it)",
                           setting="DIGEST_PROVIDER_TOKEN"))
    else:
        checks.append(ok("provider.can-send", "scope mail.send"))
    checks.append(_sendgrid_domain(settings, scopes))
    return checks


def _sendgrid_domain(settings: Settings, scopes: list[str]) -> Check:
    """The From domain among the account's authenticated domains, when the key may read them
    (`whitelabel.read`; a send-only key may not, and should not need to)."""
    if "whitelabel.read" not in scopes:
        return ok("provider.domain", "the key cannot read authenticated domains (fine for a "
                                     "send-only key); the DNS checks cover the From domain")
    response = _get(settings, "/v3/whitelabel/domains?limit=200",
                    headers={"Authorization": f"Bearer {_token(settings)}"})
    if response.status_code != 200:
        return _unexpected("provider.domain", response)
    sender = from_domain(settings)
    listed = _json(response).get("data") or []  # the answer is a JSON array
    mine = [d for d in listed if isinstance(d, dict) and (
        sender == str(d.get("domain", "")).lower()
        or sender.endswith("." + str(d.get("domain", "")).lower()))]
    if not any(d.get("valid") for d in mine):
        state = "not validated" if mine else "not an authenticated domain"
        return fail("provider.domain", f"the From domain {sender} is {state} in sendgrid",
                    f"authenticate {sender} in SendGrid (Settings, Sender Authentication) and "
                    "publish its DNS records", setting="DIGEST_FROM")
    return ok("provider.domain", f"{sender} is an authenticated sendgrid domain")


def check_mailgun(settings: Settings) -> list[Check]:
    domain = (settings.mailgun_domain or "").strip()
    response = _get(settings, f"/v4/domains/{quote(domain, safe='')}",
                    auth=("api", _token(settings)))
    if response.status_code in (401, 403):
        return [_refused("provider.credentials", "mailgun", response,
                         "a Mailgun API key that can read the domain (a domain sending key "
                         "cannot)")]
    if response.status_code == 404:
        return [ok("provider.credentials", "mailgun accepted the key"),
                fail("provider.can-send", f"mailgun has no domain {domain!r} (on this region's "
                                          "API: EU accounts use https://api.eu.mailgun.net)",
                     "set DIGEST_MAILGUN_DOMAIN to a domain of the account, or "
                     "DIGEST_PROVIDER_URL to the EU API", setting="DIGEST_MAILGUN_DOMAIN")]
    if response.status_code != 200:
        return [_unexpected("provider.credentials", response)]
    info = _json(response).get("domain") or {}
    checks = [ok("provider.credentials", f"mailgun domain {domain}")]
    state = str(info.get("state", "?"))
    if state != "active" or info.get("is_disabled"):
        disabled = " and disabled" if info.get("is_disabled") else ""
        checks.append(fail("provider.can-send", f"mailgun domain {domain} is {state}{disabled}",
                           "finish the domain's DNS verification in Mailgun (or contact support "
                           "for a disabled domain)", setting="DIGEST_MAILGUN_DOMAIN"))
    else:
        checks.append(ok("provider.can-send", f"domain {domain} is active"))
    sender = from_domain(settings)
    if sender and sender != domain.lower() and not sender.endswith("." + domain.lower()) \
            and not domain.lower().endswith("." + sender):
        checks.append(warn("provider.domain", f"From domain {sender} is not the mailgun "
                                              f"domain {domain}",
                           "send from an address at the Mailgun domain (DMARC alignment)",
                           setting="DIGEST_FROM"))
    return checks


def check_resend(settings: Settings) -> list[Check]:
    response = _get(settings, "/domains", headers={"Authorization": f"Bearer {_token(settings)}"})
    data = _json(response)
    if response.status_code == 401 and data.get("name") == "restricted_api_key":
        return [ok("provider.credentials", "resend key restricted to sending"),
                warn("provider.domain", "a sending-only key cannot list domains, so the From "
                                        "domain's verification was not checked",
                     "check the domain in Resend's dashboard (or run doctor with a full-access "
                     "key)", setting="DIGEST_PROVIDER_TOKEN")]
    if response.status_code in (401, 403):
        return [_refused("provider.credentials", "resend", response, "an API key")]
    if response.status_code != 200:
        return [_unexpected("provider.credentials", response)]
    domains = [d for d in data.get("data") or [] if isinstance(d, dict)]
    checks = [ok("provider.credentials", f"resend key, {len(domains)} domain(s)")]
    sender = from_domain(settings)
    match = next((d for d in domains if str(d.get("name", "")).lower() == sender), None)
    if match is None:
        return checks + [fail("provider.can-send", f"the From domain {sender} is not a resend "
                                                   "domain of this account",
                              f"add {sender} in Resend and publish its DNS records",
                              setting="DIGEST_FROM")]
    status = match.get("status")
    sending = (match.get("capabilities") or {}).get("sending", "enabled")
    if status != "verified" or sending != "enabled":
        why = f"is {status}" if status != "verified" else "has sending disabled"
        return checks + [fail("provider.can-send", f"resend domain {sender} {why}",
                              f"finish verifying {sender} in Resend (its DNS records)",
                              setting="DIGEST_FROM")]
    return checks + [ok("provider.can-send", f"domain {sender} is verified")]


def check_smtp(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> list[Check]:
    from digest.delivery.providers.smtp import SmtpTarget

    target = SmtpTarget.from_url(settings.smtp_url or "")
    context = ssl_context or ssl.create_default_context()
    checks: list[Check] = []
    try:
        if target.mode == "ssl":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=TIMEOUT,
                                                  context=context)
        else:
            conn = smtplib.SMTP(target.host, target.port, timeout=TIMEOUT)
    except (OSError, smtplib.SMTPException) as exc:
        return [fail("provider.credentials", f"cannot connect to {target.host}:{target.port} "
                                             f"({exc})", "check DIGEST_SMTP_URL's host and port",
                     setting="DIGEST_SMTP_URL")]
    try:
        code, _ = conn.ehlo()
        if code != 250:
            return [fail("provider.credentials", f"{target.host} answered EHLO with {code}",
                         "use a server that speaks ESMTP", setting="DIGEST_SMTP_URL")]
        if target.mode != "ssl":
            offered = conn.has_extn("starttls")
            if not offered:
                return [fail("provider.tls", f"{target.host} does not offer STARTTLS: the "
                                             "password and every message would cross the "
                                             "network in clear",
                             "use smtps:// or a server that offers STARTTLS",
                             setting="DIGEST_SMTP_URL")]
            if target.mode == "plain":
                checks.append(warn("provider.tls", f"{target.host} offers STARTTLS and "
                                                   "DIGEST_SMTP_URL does not use it",
                                   "write the URL as smtp+starttls://...",
                                   setting="DIGEST_SMTP_URL"))
            else:
                conn.starttls(context=context)
                conn.ehlo()
                checks.append(ok("provider.tls", "STARTTLS"))
        else:
            checks.append(ok("provider.tls", "implicit TLS (smtps)"))
        if not target.username:
            checks.append(warn("provider.credentials", "no user name in DIGEST_SMTP_URL: AUTH "
                                                       "not tried",
                               "add user:password@ if the relay needs a login",
                               setting="DIGEST_SMTP_URL"))
        else:
            conn.login(target.username, target.password or "")
            checks.append(ok("provider.credentials", f"{target.host} accepted AUTH as "
                                                     f"{target.username}"))
    except smtplib.SMTPAuthenticationError as exc:
        checks.append(fail("provider.credentials", f"{target.host} refused the login "
                                                   f"({exc.smtp_code})",
                           "fix the user and password in DIGEST_SMTP_URL",
                           setting="DIGEST_SMTP_URL"))
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        checks.append(fail("provider.credentials", f"{target.host}: {exc}",
                           "check DIGEST_SMTP_URL", setting="DIGEST_SMTP_URL"))
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
    return checks


CHECKS: dict[str, Callable[[Settings], list[Check]]] = {
    "postmark": check_postmark, "sendgrid": check_sendgrid, "mailgun": check_mailgun,
    "resend": check_resend, "smtp": check_smtp}


def provider_checks(settings: Settings) -> list[Check]:
    """The provider's own answer about the credentials; the network failing is a failure."""
    check = CHECKS.get(settings.provider)
    if check is None:
        return [ok("provider.credentials", "outbox writes .eml files; nothing to check")]
    try:
        return check(settings)
    except requests.RequestException as exc:
        return [fail("provider.credentials", f"{settings.provider} could not be reached ({exc})",
                     "check the network and DIGEST_PROVIDER_URL", setting="DIGEST_PROVIDER_URL")]

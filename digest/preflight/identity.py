"""The offline checks a real send must pass: who the mail is from, where its links point, the
postal address it carries and the key that signs its tokens. No network; run before every send
with a provider other than `outbox`, and a failure refuses it (`refuse_unless_ready`)."""

from __future__ import annotations

import ipaddress
from email.utils import parseaddr
from functools import lru_cache
from urllib.parse import urlsplit

from digest.preflight.report import Check, PreflightRefused, fail, ok, warn
from digest.settings import SAMPLE_POSTAL_ADDRESS, SAMPLE_SECRETS, SECRET_HINT, Settings

MIN_SECRET = 16  # as `Settings.signing_key` demands
# Names that never reach a reader's inbox or browser: RFC 2606 / RFC 6761 special-use names,
# mDNS, and the private-use names people give home and office networks.
RESERVED_SUFFIXES = ("localhost", "local", "test", "invalid", "example", "internal", "lan",
                     "home.arpa", "localdomain", "corp", "home")
# HTTP providers report bounces and complaints by webhook; SMTP has none.
WEBHOOK_PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend")


@lru_cache(maxsize=1)
def _suffixes():
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList(accept_unknown=False)


def organizational_domain(domain: str) -> str | None:
    """`news.brand.co.uk` -> `brand.co.uk` (the Public Suffix List, shipped offline); None when
    the name has no known public suffix or is one."""
    return _suffixes().privatesuffix(domain.lower().rstrip("."))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def unusable_host(host: str) -> str | None:
    """Why `host` is not a real public domain readers can reach, or None when it is."""
    host = host.lower().rstrip(".")
    if not host:
        return "it is empty"
    if _ip(host) is not None:
        return f"{host} is an IP address, not a domain"
    labels = host.split(".")
    for suffix in RESERVED_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return f"{host} is a reserved name (.{suffix}) that no reader can reach"
    if len(labels) < 2:
        return f"{host} is a single name, not a public domain"
    org = organizational_domain(host)
    if org is None:
        return f"{host} has no known public suffix (a typo, or a private name?)"
    if org.split(".")[0] == "example":
        return f"{host} is under {org}, reserved for documentation"
    return None


def from_domain(settings: Settings) -> str:
    address = parseaddr(settings.from_)[1]
    return address.rpartition("@")[2].lower() if "@" in address else ""


def check_from(settings: Settings) -> Check:
    address = parseaddr(settings.from_)[1]
    name, setting = "identity.from-domain", "DIGEST_FROM"
    fix = ("set DIGEST_FROM to an address at a domain you own and have set up with the "
           "provider, e.g. 'Weekly Verdicts <digest@news.yourdomain.com>'")
    if "@" not in address:
        return fail(name, f"{settings.from_!r} is not an email address", fix, setting=setting)
    why = unusable_host(from_domain(settings))
    if why:
        return fail(name, f"{address}: {why}", fix, setting=setting)
    return ok(name, address, setting=setting)


def check_base_url(settings: Settings) -> Check:
    name, setting = "identity.base-url", "DIGEST_BASE_URL"
    fix = ("set DIGEST_BASE_URL to the public https address where `digest serve` answers, "
           "e.g. https://digest.yourdomain.com: every unsubscribe and view-in-browser link "
           "points there")
    parts = urlsplit(settings.base_url)
    host = parts.hostname or ""
    if parts.scheme != "https":
        return fail(name, f"{settings.base_url} is not https (unsubscribe links must be https "
                          "for mailbox providers)", fix, setting=setting)
    address = _ip(host)
    if address is not None:
        kind = ("loopback" if address.is_loopback else "private" if address.is_private
                else "link-local" if address.is_link_local else "")
        if kind or address.is_unspecified or address.is_reserved:
            return fail(name, f"{settings.base_url} points at a {kind or 'reserved'} address "
                              "no reader can reach", fix, setting=setting)
        return warn(name, f"{settings.base_url} is an IP address (links work, but look odd "
                          "and break when the address changes)", fix, setting=setting)
    why = unusable_host(host)
    if why:
        return fail(name, f"{settings.base_url}: {why}", fix, setting=setting)
    return ok(name, settings.base_url, setting=setting)


def check_postal_address(settings: Settings) -> Check:
    name, setting = "identity.postal-address", "DIGEST_POSTAL_ADDRESS"
    fix = ("set DIGEST_POSTAL_ADDRESS to your organisation's physical postal address "
           "(CAN-SPAM requires one in every commercial email)")
    value = " ".join(settings.postal_address.split())
    if not value:
        return fail(name, "it is empty", fix, setting=setting)
    if value == SAMPLE_POSTAL_ADDRESS or "example street" in value.lower():
        return fail(name, f"{value!r} is the sample address", fix, setting=setting)
    if len(value) < 10:
        return fail(name, f"{value!r} is too short to be a postal address", fix, setting=setting)
    return ok(name, value, setting=setting)


def check_secret(settings: Settings) -> Check:
    name, setting = "identity.secret-key", "DIGEST_SECRET_KEY"
    raw = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if not raw:
        return fail(name, "it is not set", SECRET_HINT, setting=setting)
    if raw.strip().lower() in SAMPLE_SECRETS or len(raw) < MIN_SECRET:
        return fail(name, f"it is a sample or shorter than {MIN_SECRET} characters "
                          f"({len(raw)})", SECRET_HINT, setting=setting)
    return ok(name, f"set, {len(raw)} characters", setting=setting)


def check_credentials(settings: Settings) -> list[Check]:
    """What the provider needs before it can be called at all (the provider checks then try it)."""
    provider = settings.provider
    if provider == "outbox":
        return [ok("identity.provider-settings", "outbox writes .eml files: no credentials")]
    if provider == "smtp":
        if not settings.smtp_url:
            return [fail("identity.provider-settings", "provider smtp has no DIGEST_SMTP_URL",
                         "set DIGEST_SMTP_URL=smtp+starttls://user:password@host:587",
                         setting="DIGEST_SMTP_URL")]
        return [ok("identity.provider-settings", "DIGEST_SMTP_URL is set",
                   setting="DIGEST_SMTP_URL")]
    out = []
    if settings.provider_token is None or not settings.provider_token.get_secret_value():
        out.append(fail("identity.provider-settings", f"provider {provider} has no API key",
                        f"set DIGEST_PROVIDER_TOKEN to the {provider} API key or server token",
                        setting="DIGEST_PROVIDER_TOKEN"))
    if provider == "mailgun" and not settings.mailgun_domain:
        out.append(fail("identity.provider-settings", "provider mailgun has no sending domain",
                        "set DIGEST_MAILGUN_DOMAIN to the domain set up in Mailgun",
                        setting="DIGEST_MAILGUN_DOMAIN"))
    return out or [ok("identity.provider-settings", f"{provider} credentials are set")]


def check_webhook(settings: Settings) -> Check:
    name, setting = "identity.webhook-credential", "DIGEST_WEBHOOK_SECRET"
    if settings.provider not in WEBHOOK_PROVIDERS:
        return ok(name, f"provider {settings.provider} reports no events by webhook",
                  setting=setting)
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        return warn(name, f"no {settings.provider} webhook credential: bounces and complaints "
                          "will not come back, so the complaint cut-off cannot work",
                    f"set DIGEST_WEBHOOK_SECRET and point the {settings.provider} webhook at "
                    f"{settings.base_url}/webhooks/{settings.provider}", setting=setting)
    return ok(name, "set", setting=setting)


def identity_checks(settings: Settings) -> list[Check]:
    """Every offline check, in the order a reader fixes them."""
    return [check_from(settings), check_base_url(settings), check_postal_address(settings),
            check_secret(settings), *check_credentials(settings), check_webhook(settings)]


def refuse_unless_ready(settings: Settings) -> list[Check]:
    """Before a real send: raise `PreflightRefused` listing every failed offline check, or
    return the warnings. The `outbox` provider writes files only: nothing to refuse."""
    if not settings.sends_real_mail:
        return []
    checks = identity_checks(settings)
    failures = [c for c in checks if c.status == "fail"]
    if failures:
        raise PreflightRefused(failures)
    return [c for c in checks if c.status == "warn"]

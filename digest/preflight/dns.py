"""DNS for the From domain, as mailbox providers will read it (dnspython; the resolver is
`DIGEST_DNS_RESOLVER` when set, so a test can point the checks at its own server).

Gmail and Yahoo's bulk-sender rules want SPF, DKIM and DMARC on the sending domain. Each check
here has its own name, so a broken zone says exactly what is wrong: `dns.spf-missing`,
`dns.spf-multiple`, `dns.spf-too-many-lookups`, `dns.dmarc-missing`, `dns.dmarc-invalid`,
`dns.dmarc-unaligned`, `dns.dkim-missing`, `dns.bounce-domain`, `dns.lookup-failed`.
SPF and DMARC records are a handful of `tag=value` terms; parsing them here is shorter than a
library that also fetches MTA-STS and BIMI over HTTPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.resolver

from digest.preflight.identity import from_domain, organizational_domain, unusable_host
from digest.preflight.report import Check, fail, ok
from digest.settings import Settings

SPF_LOOKUP_LIMIT = 10  # RFC 7208 section 4.6.4
# What each provider's setup guide tells the sender to publish.
SPF_INCLUDES = {"postmark": "spf.mtasv.net", "sendgrid": "sendgrid.net",
                "mailgun": "mailgun.org", "resend": "amazonses.com"}
# DKIM selectors the providers document as fixed; the others are shown in their dashboards
# (set DIGEST_DKIM_SELECTORS to check those).
DKIM_SELECTORS = {"sendgrid": ("s1", "s2"), "resend": ("resend",)}


class LookupFailed(Exception):
    """The resolver did not answer (timeout, SERVFAIL): not the same as "no record"."""


def make_resolver(settings: Settings) -> dns.resolver.Resolver:
    if not settings.dns_resolver:
        resolver = dns.resolver.Resolver()
    else:
        host, _, port = settings.dns_resolver.strip().rpartition(":")
        if not host or not port.isdigit():  # no port given (an IPv6 address needs [..]:port)
            host, port = settings.dns_resolver.strip(), "53"
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.lifetime = resolver.timeout = 5.0
    return resolver


@dataclass
class Lookup:
    resolver: dns.resolver.Resolver

    def records(self, name: str, rdtype: str) -> list:
        try:
            return list(self.resolver.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise LookupFailed(f"{rdtype} {name}: {exc}") from None

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.records(name, "TXT")]


def _spf_records(texts: list[str]) -> list[str]:
    return [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def count_spf_lookups(lookup: Lookup, domain: str, *, seen: set[str] | None = None) -> int:
    """DNS lookups an SPF check of `domain` costs: include, a, mx, ptr, exists and redirect,
    followed through includes and redirects (stops counting once past the limit)."""
    seen = set() if seen is None else seen
    if domain in seen:
        return 0
    seen.add(domain)
    records = _spf_records(lookup.txt(domain))
    if len(records) != 1:
        return 0
    count = 0
    for term in records[0].split()[1:]:
        term = term.lower().lstrip("+-~?")
        mechanism, _, argument = term.partition(":")
        mechanism = mechanism.split("/")[0]
        if term.startswith("redirect="):
            count += 1 + count_spf_lookups(lookup, term.partition("=")[2], seen=seen)
        elif mechanism == "include":
            count += 1 + count_spf_lookups(lookup, argument, seen=seen)
        elif mechanism in ("a", "mx", "ptr", "exists"):
            count += 1
        if count > SPF_LOOKUP_LIMIT:
            break
    return count


def check_spf(lookup: Lookup, domain: str, provider: str) -> Check:
    include = SPF_INCLUDES.get(provider)
    example = f"v=spf1 include:{include} ~all" if include else "v=spf1 a mx ~all"
    records = _spf_records(lookup.txt(domain))
    if not records:
        return fail("dns.spf-missing", f"no SPF record at {domain}",
                    f"publish one TXT record at {domain}: {example}")
    if len(records) > 1:
        return fail("dns.spf-multiple", f"{len(records)} SPF records at {domain} (receivers "
                                        "treat that as no SPF at all)",
                    f"merge them into one TXT record, e.g. {example}")
    lookups = count_spf_lookups(lookup, domain)
    if lookups > SPF_LOOKUP_LIMIT:
        return fail("dns.spf-too-many-lookups", f"the SPF record at {domain} needs more than "
                                                f"{SPF_LOOKUP_LIMIT} DNS lookups ({lookups} "
                                                "counted), so receivers reject it",
                    "remove include:s of services that do not send this mail, or replace "
                    "a/mx terms with ip4:/ip6: ranges")
    if include and f"include:{include}" not in records[0].lower():
        return ok("dns.spf", f"{records[0]!r} ({lookups} lookups; no include:{include}, fine "
                             "if the provider uses its own Return-Path domain)")
    return ok("dns.spf", f"{records[0]!r} ({lookups} lookups)")


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags


def find_dmarc(lookup: Lookup, domain: str) -> tuple[str, str] | None:
    """(where, record): at `_dmarc.<domain>`, else at the organizational domain (RFC 7489 6.6.3)."""
    org = organizational_domain(domain) or domain
    for name in dict.fromkeys((f"_dmarc.{domain}", f"_dmarc.{org}")):
        records = [t for t in lookup.txt(name) if t.replace(" ", "").lower().startswith("v=dmarc1")]
        if records:
            return name, records[0]
    return None


def default_bounce_domain(settings: Settings, domain: str) -> str:
    """Where the provider's Return-Path points by the setup its docs describe."""
    if settings.bounce_domain:
        return settings.bounce_domain.strip().lower().rstrip(".")
    return {"postmark": f"pm-bounces.{domain}", "resend": f"send.{domain}",
            "mailgun": (settings.mailgun_domain or domain).lower()}.get(settings.provider, domain)


def check_dmarc(lookup: Lookup, domain: str, bounce: str) -> list[Check]:
    found = find_dmarc(lookup, domain)
    if found is None:
        return [fail("dns.dmarc-missing", f"no DMARC record at _dmarc.{domain}",
                     f"publish a TXT record at _dmarc.{domain}: v=DMARC1; p=none; "
                     f"rua=mailto:dmarc@{organizational_domain(domain) or domain}")]
    where, record = found
    tags = _tags(record)
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return [fail("dns.dmarc-invalid", f"{where} has p={policy or '(missing)'}",
                     f"set p=none (or quarantine/reject) in the record at {where}")]
    checks = [ok("dns.dmarc", f"{where}: p={policy}")]
    strict = tags.get("aspf", "r").lower() == "s"
    aligned = (bounce == domain if strict
               else organizational_domain(bounce) == organizational_domain(domain))
    if not aligned:
        mode = "strict (aspf=s)" if strict else "relaxed"
        checks.append(fail("dns.dmarc-unaligned",
                           f"the Return-Path domain {bounce} is not aligned with {domain} under "
                           f"the {mode} SPF alignment of {where}",
                           "use a Return-Path (bounce) domain under your From domain and "
                           "relaxed alignment (aspf=r, the default), or set "
                           "DIGEST_BOUNCE_DOMAIN to the one you set up"))
    else:
        checks.append(ok("dns.dmarc-aligned", f"Return-Path {bounce} aligns with {domain}"))
    return checks


def check_dkim(lookup: Lookup, domain: str, settings: Settings) -> Check:
    if settings.dkim_selectors:
        selectors = tuple(s.strip() for s in settings.dkim_selectors.split(",") if s.strip())
    else:
        selectors = DKIM_SELECTORS.get(settings.provider, ())
    if not selectors:
        return ok("dns.dkim", f"{settings.provider} documents no fixed DKIM selector; set "
                              "DIGEST_DKIM_SELECTORS to the one its dashboard shows to check it")
    missing = []
    for selector in selectors:
        name = f"{selector}._domainkey.{domain}"
        texts = lookup.txt(name)
        if not any("p=" in t for t in texts) and not lookup.records(name, "CNAME"):
            missing.append(name)
    if missing:
        return fail("dns.dkim-missing", f"no DKIM key at {', '.join(missing)}",
                    f"publish the DKIM record(s) {settings.provider} shows for {domain} "
                    "(without DKIM, mailbox providers junk or reject bulk mail)")
    return ok("dns.dkim", f"DKIM key found for selector(s) {', '.join(selectors)}")


def check_bounce_domain(lookup: Lookup, bounce: str) -> Check:
    for rdtype in ("MX", "CNAME", "A", "AAAA"):
        if lookup.records(bounce, rdtype):
            return ok("dns.bounce-domain", f"{bounce} resolves ({rdtype})")
    return fail("dns.bounce-domain", f"the Return-Path domain {bounce} does not resolve",
                "publish the Return-Path (custom bounce domain) record your provider shows, "
                "or set DIGEST_BOUNCE_DOMAIN to the domain you did set up")


def dns_checks(settings: Settings, resolver: dns.resolver.Resolver | None = None) -> list[Check]:
    """Every DNS check for the From domain; a resolver that does not answer is one failure."""
    domain = from_domain(settings)
    if not domain or unusable_host(domain):
        return [fail("dns.skipped", "the From domain is not a public domain, so its DNS "
                                    "cannot be checked", "fix DIGEST_FROM first",
                     setting="DIGEST_FROM")]
    lookup = Lookup(resolver or make_resolver(settings))
    bounce = default_bounce_domain(settings, domain)
    try:
        return [check_spf(lookup, domain, settings.provider),
                *check_dmarc(lookup, domain, bounce), check_dkim(lookup, domain, settings),
                check_bounce_domain(lookup, bounce)]
    except LookupFailed as exc:
        return [fail("dns.lookup-failed", f"the resolver did not answer: {exc}",
                     "check the network, or DIGEST_DNS_RESOLVER", setting="DIGEST_DNS_RESOLVER")]

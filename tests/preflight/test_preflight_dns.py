"""The DNS checks against an authoritative server the test starts on 127.0.0.1 (dnslib): a
good zone passes every check, and each broken zone fails with its own named failure."""

from __future__ import annotations

import pytest

from digest.preflight.dns import count_spf_lookups, dns_checks, Lookup, make_resolver
from digest.settings import load_settings
from dnsserver import DOMAIN, SPF, Zone, zone  # noqa: F401  (fixture)


def conf(zone: Zone, **overrides):
    values = dict(provider="resend", provider_token="re_test", from_=f"Verdicts <digest@{DOMAIN}>",
                  dns_resolver=f"127.0.0.1:{zone.port}") | overrides
    return load_settings(**values)


def failures(zone: Zone, **overrides) -> set[str]:
    return {c.name for c in dns_checks(conf(zone, **overrides)) if c.status == "fail"}


def replace(zone: Zone, name: str, rtype: str, *values: str) -> None:
    """Drop every `rtype` record of `name`, then add `values`."""
    zone.records = [r for r in zone.records if not (r[0] == name and r[1] == rtype
                                                    and r[2].lower().startswith(
                                                        ("v=spf1", "v=dmarc1", "p=")))]
    zone.records += [(name, rtype, v) for v in values]


def test_good_zone_passes_every_check(zone):
    checks = dns_checks(conf(zone))
    assert [c.status for c in checks] == ["ok"] * len(checks), [c.line() for c in checks]
    assert {c.name for c in checks} == {"dns.spf", "dns.dmarc", "dns.dmarc-aligned", "dns.dkim",
                                        "dns.bounce-domain"}
    assert f"TXT _dmarc.{DOMAIN}" in zone.queries  # asked our server, nobody else


def _no_spf(zone):
    replace(zone, DOMAIN, "TXT")


def _two_spf(zone):
    replace(zone, DOMAIN, "TXT", SPF, "v=spf1 include:_spf.mail.example ~all")


def _too_many_lookups(zone):
    # 6 includes, each costing a and mx: 6 + 12 = 18 lookups.
    replace(zone, DOMAIN, "TXT", "v=spf1 " + " ".join(f"include:s{i}.verdict-digest.net"
                                                       for i in range(6)) + " ~all")
    zone.records += [(f"s{i}.verdict-digest.net", "TXT", "v=spf1 a mx -all") for i in range(6)]


def _no_dmarc(zone):
    replace(zone, f"_dmarc.{DOMAIN}", "TXT")


def _unaligned_dmarc(zone):
    # strict SPF alignment, while the Return-Path is send.<domain>: SPF can never align
    replace(zone, f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=quarantine; aspf=s")


def _no_dkim(zone):
    replace(zone, f"resend._domainkey.{DOMAIN}", "TXT")


def _no_bounce_domain(zone):
    zone.records = [r for r in zone.records if r[0] != f"send.{DOMAIN}"]


def _bad_policy(zone):
    replace(zone, f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=monitor")


@pytest.mark.parametrize("breaks, expected", [
    (_no_spf, "dns.spf-missing"),
    (_two_spf, "dns.spf-multiple"),
    (_too_many_lookups, "dns.spf-too-many-lookups"),
    (_no_dmarc, "dns.dmarc-missing"),
    (_unaligned_dmarc, "dns.dmarc-unaligned"),
    (_no_dkim, "dns.dkim-missing"),
    (_no_bounce_domain, "dns.bounce-domain"),
    (_bad_policy, "dns.dmarc-invalid"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else v)
def test_each_broken_zone_fails_by_name(zone, breaks, expected):
    breaks(zone)
    assert failures(zone) == {expected}


def test_dmarc_at_the_organizational_domain_counts(zone):
    replace(zone, f"_dmarc.{DOMAIN}", "TXT")
    zone.records.append(("_dmarc.verdict-digest.net", "TXT", "v=DMARC1; p=reject"))
    checks = {c.name: c for c in dns_checks(conf(zone))}
    dmarc = checks["dns.dmarc"]
    assert dmarc.status == "ok" and "_dmarc.verdict-digest.net" in dmarc.saw


def test_lookup_count_follows_includes_and_redirects_without_looping(zone):
    replace(zone, DOMAIN, "TXT",
            "v=spf1 include:loop.verdict-digest.net a redirect=r.verdict-digest.net")
    zone.records += [
        ("loop.verdict-digest.net", "TXT", f"v=spf1 include:{DOMAIN} mx -all"),
        ("r.verdict-digest.net", "TXT", "v=spf1 exists:%{i}.x.verdict-digest.net -all")]
    lookup = Lookup(make_resolver(conf(zone)))
    # include:loop (1) + its include back (1, not followed again) + its mx (1) + a (1)
    # + redirect (1) + exists (1)
    assert count_spf_lookups(lookup, DOMAIN) == 6


def test_selectors_and_bounce_domain_from_settings(zone):
    zone.records += [(f"k1._domainkey.{DOMAIN}", "CNAME", "dkim.mail.example"),
                     ("bounces.verdict-digest.net", "MX", "mx.mail.example")]
    assert failures(zone, provider="postmark", dkim_selectors="k1",
                    bounce_domain="bounces.verdict-digest.net") == set()
    assert failures(zone, provider="postmark", dkim_selectors="k1,k2",
                    bounce_domain="bounces.verdict-digest.net") == {"dns.dkim-missing"}
    # Postmark's documented Return-Path host, pm-bounces.<domain>, is not in the zone
    assert failures(zone, provider="postmark") == {"dns.bounce-domain"}


def test_a_resolver_that_fails_is_one_failure_not_missing_records(zone):
    zone.servfail = True
    checks = dns_checks(conf(zone))
    assert [c.name for c in checks] == ["dns.lookup-failed"]


def test_placeholder_from_domain_is_not_looked_up(zone):
    checks = dns_checks(conf(zone, from_="digest@localhost"))
    assert [c.name for c in checks] == ["dns.skipped"] and zone.queries == []

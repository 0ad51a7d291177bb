"""An authoritative DNS server on 127.0.0.1 for the preflight's DNS checks (dnslib): it answers
from a list of records the test edits, and NXDOMAIN for any name it does not hold.

    def test_x(zone):
        zone.records.append(("_dmarc.news.verdict-digest.net", "TXT", "v=DMARC1; p=none"))
        ... load_settings(dns_resolver=f"127.0.0.1:{zone.port}") ...
"""

from __future__ import annotations

import threading

import pytest
from dnslib import CNAME, MX, QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

DOMAIN = "news.verdict-digest.net"
SPF = "v=spf1 include:amazonses.com ~all"
GOOD = [
    (DOMAIN, "TXT", "site-verification=4f2a9c"),  # not SPF: must be ignored
    (DOMAIN, "TXT", SPF),
    ("amazonses.com", "TXT", "v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 ~all"),
    (f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=none; rua=mailto:dmarc@verdict-digest.net"),
    (f"resend._domainkey.{DOMAIN}", "TXT", "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIDAQAB"),
    (f"send.{DOMAIN}", "MX", "feedback-smtp.us-east-1.amazonses.com"),
    (f"send.{DOMAIN}", "TXT", SPF),
]


class Zone(BaseResolver):
    """Answers from a list of (name, type, value); a name it does not know is NXDOMAIN."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, str]] = list(GOOD)
        self.queries: list[str] = []
        self.servfail = False

    def resolve(self, request, handler):
        reply = request.reply()
        if self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        reply.header.aa = 1
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append(f"{qtype} {name}")
        known = False
        for rname, rtype, value in self.records:
            if rname != name:
                continue
            known = True
            if rtype == qtype:
                rdata = {"TXT": lambda v: TXT(v), "MX": lambda v: MX(v, 10),
                         "CNAME": lambda v: CNAME(v)}[rtype](value)
                reply.add_answer(RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=60))
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture
def zone():
    resolver = Zone()
    server = DNSServer(resolver, address="127.0.0.1", port=0,
                       logger=DNSLogger(logf=lambda _line: None))  # not on stdout
    thread = threading.Thread(target=server.server.serve_forever,
                              kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    resolver.port = server.server.server_address[1]
    try:
        yield resolver
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(timeout=5)

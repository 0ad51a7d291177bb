"""Outgoing Resend and SendGrid requests against the providers' published OpenAPI documents.

The documents are reference material kept outside the repository (`provider-specs/` in
DIGEST_SHARED_DIR); the provider tests check the same requests against the documented shape
from the repository alone (`provider_shapes`). One test on purpose: without the documents it
skips once, saying where they come from."""

from __future__ import annotations

import pytest
from fakeserver import Recorded, Reply, fake_server, validate_request  # noqa: F401  (fixture)
from material import shared_material
from provider_samples import letter, recipient, recipients
from provider_shapes import shape_problems

from digest.delivery.providers.resend import ResendProvider
from digest.delivery.providers.sendgrid import SendGridProvider

RESEND = ("resend", "resend.yaml", "https://api.resend.com")
SENDGRID = ("sendgrid", "tsg_mail_v3.json", "https://api.sendgrid.com")
TIMEOUT = (2.0, 2.0)


def _resend_answer(request: Recorded) -> Reply:
    return Reply(200, {"data": [{"id": f"re-{i}"} for i in range(len(request.json()))]})


def _sends(server) -> dict[str, list[Recorded]]:
    """The requests each provider makes for the batches the send loop hands it: a few readers
    with awkward names, one reader, and each provider's largest batch."""
    made: dict[str, list[Recorded]] = {}
    odd = [recipient(7, name='Quote " Back\\slash \u2028 \x07')]
    server.default = _resend_answer
    with ResendProvider("re_test_key", base_url=server.url, timeout=TIMEOUT) as p:
        for n, batch in enumerate((recipients(3) + odd, [recipient(5)],
                                   [recipient(i) for i in range(100)])):
            p.send_batch(letter(), batch, batch_key=f"2026-W47:batch:{n:06d}")
    made["resend"], server.requests[:] = list(server.requests), []
    server.default = Reply(202, b"", headers={"X-Message-Id": "sg-1"})
    with SendGridProvider("SG.key", base_url=server.url, timeout=TIMEOUT) as p:
        for n, batch in enumerate((recipients(3) + odd, [recipient(5)],
                                   [recipient(i) for i in range(1000)])):
            p.send_batch(letter(), batch, batch_key=f"b-{n}")
    made["sendgrid"] = list(server.requests)
    return made


def test_outgoing_requests_validate_against_the_published_specs(fake_server):
    folder = shared_material("provider-specs")
    made = _sends(fake_server)
    for name, document, host in (RESEND, SENDGRID):
        spec = folder / name / document
        assert spec.exists(), f"{spec} missing"
        assert len(made[name]) == 3
        for recorded in made[name]:
            validate_request(spec, recorded, host_url=host)
            # the repository's own shape check agrees with the published document
            assert shape_problems(name, recorded) == []
    # The validator is not a rubber stamp: a body each provider would refuse fails it.
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    refused = {
        RESEND: Recorded("POST", "/emails/batch", headers,
                         b'[{"from": "a@example.com", "subject": "s"}]', ("127.0.0.1", 1)),
        SENDGRID: Recorded("POST", "/v3/mail/send", headers,
                           b'{"personalizations": [{"to": "someone"}], '
                           b'"from": {"email": "a@example.com"}}', ("127.0.0.1", 1)),
    }
    for (name, document, host), recorded in refused.items():
        with pytest.raises(Exception, match="(?i)body|schema|required|valid"):
            validate_request(folder / name / document, recorded, host_url=host)
        assert shape_problems(name, recorded)

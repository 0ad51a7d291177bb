"""A batch's request is built ahead (`prepare`) and posted later (`send_prepared`): the bytes
must be those a direct build gives, a retry re-posts the very same request, the send loop
builds off the provider thread, and the environment is still honoured though read once."""

from __future__ import annotations

import json
import random
import threading
from types import SimpleNamespace

from hypothesis import given, settings as hsettings, strategies as st

from delivery_support import FakeClock, RecordingProvider, add_subscribers, make_issue
from digest.delivery.providers.http import _BIG, Body, JsonString
from digest.delivery.providers.postmark import PostmarkProvider
from digest.delivery.providers.sendgrid import SendGridProvider
from digest.delivery.send import SendPolicy, send_issue
from digest.edition.personalize import NAME, UNSUBSCRIBE_URL, VOTE_URL, SplitTemplate
from digest.errors import TransientProviderError
from fakeserver import Reply, fake_server  # noqa: F401  (fixture)
from provider_samples import letter, recipients

_TEXT = st.text(alphabet=st.sampled_from('ab "\\<>&\'é€\n\t/=.'), max_size=40)


@hsettings(max_examples=60, deadline=None)
@given(head=_TEXT, middle=_TEXT, values=st.tuples(_TEXT, _TEXT, _TEXT),
       escape=st.booleans(), big=st.booleans())
def test_json_string_is_json_of_the_filled_document(head, middle, values, escape, big):
    """Each value encoded once and placed at every slot it fills: the same bytes as encoding
    the filled document, with large shared parts kept as pieces of their own."""
    filler = 'x"é' * (_BIG // 3 + 1) if big else ""
    document = (f"{head}{UNSUBSCRIBE_URL}{middle}{VOTE_URL}{filler}{NAME}{VOTE_URL}{middle}"
                f"{VOTE_URL}{head}{UNSUBSCRIBE_URL}")
    template = SplitTemplate(document, escape_html=escape)
    mine = dict(zip((UNSUBSCRIBE_URL, VOTE_URL, NAME), values))
    encoded = JsonString(template)
    expected = json.dumps(template.fill(mine), ensure_ascii=False).encode("utf-8")
    assert encoded.render(mine) == expected
    pieces = encoded.pieces(mine)
    if big:
        assert any(len(p) >= _BIG for p in pieces) and len(pieces) <= 5


def test_json_string_with_one_slot_and_with_none():
    one = SplitTemplate(f"a{NAME}b", escape_html=True)
    assert JsonString(one).render({NAME: '<"x">'}) == json.dumps('a&lt;&quot;x&quot;&gt;b').encode()
    none = SplitTemplate('plain "text"', escape_html=False)
    assert JsonString(none).render({}) == json.dumps('plain "text"').encode()


def test_a_retry_posts_the_prepared_request_unchanged(fake_server):
    fake_server.script(Reply(503, {"message": "busy"}),
                       lambda req: Reply(200, [{"ErrorCode": 0, "Message": "OK", "To": m["To"],
                                                "MessageID": f"pm-{i}"}
                                               for i, m in enumerate(req.json())]))
    the_letter, batch = letter(), recipients(3)
    with PostmarkProvider("t", base_url=fake_server.url, timeout=(2.0, 2.0)) as provider:
        prepared = provider.prepare(the_letter, batch, batch_key="b-1")
        direct = bytes(provider.build_request(the_letter, batch, "b-1").body)
        try:
            provider.send_prepared(prepared, the_letter, batch, batch_key="b-1")
        except TransientProviderError:
            pass
        else:
            raise AssertionError("a 503 must be transient")
        outcomes = provider.send_prepared(prepared, the_letter, batch, batch_key="b-1")
    assert [o.message_id for o in outcomes] == ["pm-0", "pm-1", "pm-2"]
    first, second = fake_server.requests
    assert first.body == second.body == direct


def test_netrc_cannot_replace_the_token_and_env_proxies_are_kept(fake_server, tmp_path,
                                                                monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fake_server.script(Reply(202, b"", headers={"X-Message-Id": "sg-1"}))
    with SendGridProvider("sg-token", base_url=fake_server.url, timeout=(2.0, 2.0)) as provider:
        provider.send_batch(letter(), recipients(2), batch_key="b-1")
        with SendGridProvider("sg-token", base_url="https://api.sendgrid.example") as remote:
            assert remote._transport["proxies"].get("https") == "http://proxy.example:3128"
    (request,) = fake_server.requests
    assert request.header("authorization") == "Bearer sg-token"


class _PreparingProvider(RecordingProvider):
    """Records which thread prepared each batch, and checks the send posts what was prepared."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.prepared_in: list[str] = []
        self.lock = threading.Lock()

    def prepare(self, letter, recipients, *, batch_key):
        with self.lock:
            self.prepared_in.append(threading.current_thread().name)
        return (batch_key, tuple(r.delivery_id for r in recipients))

    def send_prepared(self, prepared, letter, recipients, *, batch_key):
        assert prepared == (batch_key, tuple(r.delivery_id for r in recipients))
        return self.send_batch(letter, recipients, batch_key=batch_key)


def test_the_send_prepares_each_batch_once_off_the_provider_thread(engine, session, settings):
    add_subscribers(engine, 35)
    issue = make_issue(session)
    clock = FakeClock()
    provider = _PreparingProvider(batch_limit=10)
    report = send_issue(engine, issue.id, provider, settings, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7), policy=SendPolicy(in_flight=2))
    assert report.complete and report.sent == 35
    assert len(provider.calls) == len(provider.prepared_in) == 4
    assert all(name.startswith("digest-build") for name in provider.prepared_in)


def test_a_body_reports_written_only_once_every_chunk_is_out():
    body = Body([b"[", b"x" * _BIG, b"]"])
    chunks = iter(body)
    assert next(chunks) == b"[" and next(chunks) == b"x" * _BIG
    assert not body.written.is_set()  # the last chunk is not yet handed over
    assert next(chunks) == b"]"
    assert not body.written.is_set()  # handed over, but the writer has not asked for more
    assert list(chunks) == [] and body.written.is_set()
    assert bytes(body) == b"[" + b"x" * _BIG + b"]" and len(body) == _BIG + 2
    assert list(body) == [b"[", b"x" * _BIG, b"]"]  # a retry iterates it again


class _UploadingProvider(RecordingProvider):
    """Writes each request's body by iterating it, as the HTTP client does, and part-way
    through its second and later requests stops until the ledger thread has either recorded
    the previous batch (too early: the upload would have queued behind that work) or begun to
    wait for this body."""

    def __init__(self, events: list, changed: threading.Condition, **kw) -> None:
        super().__init__(**kw)
        self.events, self.changed = events, changed
        self.keys: list[str] = []
        self.recorded_during_upload: list[str] = []

    def prepare(self, letter, recipients, *, batch_key):
        return SimpleNamespace(body=Body([b"head", b"x" * _BIG, b"tail"]))

    def send_prepared(self, prepared, letter, recipients, *, batch_key):
        chunks = iter(prepared.body)
        next(chunks)
        if self.keys:
            previous = self.keys[-1]
            with self.changed:
                self.changed.wait_for(lambda: ("waiting", batch_key) in self.events
                                      or ("recorded", previous) in self.events)
                if ("recorded", previous) in self.events:
                    self.recorded_during_upload.append(previous)
        self.keys.append(batch_key)
        assert list(chunks) == [b"x" * _BIG, b"tail"] and prepared.body.written.is_set()
        return self.send_batch(letter, recipients, batch_key=batch_key)


def test_the_ledger_thread_lets_a_body_go_out_before_recording(engine, session, settings,
                                                               monkeypatch):
    """Recording the last answer, claiming and building the next batch all run Python; done
    while a large body is being written they held up every chunk's write (a 500-message upload
    took three times as long inside a send), so they wait until the body is out."""
    import digest.delivery.ledger as ledger
    import digest.delivery.send as send_module

    events: list = []
    changed = threading.Condition()

    def note(event) -> None:
        with changed:
            events.append(event)
            changed.notify_all()

    real_wait, real_record = send_module._Batch.go_first, ledger.record_outcomes

    def go_first(batch) -> None:
        note(("waiting", batch.claim.batch_key))
        real_wait(batch)

    def record_outcomes(session, batch_key, *args, **kwargs):
        note(("recorded", batch_key))
        return real_record(session, batch_key, *args, **kwargs)

    monkeypatch.setattr(send_module._Batch, "go_first", go_first)
    monkeypatch.setattr(ledger, "record_outcomes", record_outcomes)
    add_subscribers(engine, 35)
    issue = make_issue(session)
    clock = FakeClock()
    provider = _UploadingProvider(events, changed, batch_limit=10)
    report = send_issue(engine, issue.id, provider, settings, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7), policy=SendPolicy(in_flight=2))
    assert report.complete and report.sent == 35
    assert len(provider.keys) == 4 and provider.recorded_during_upload == []
    # Every batch but the first was waited for, and each answer was recorded after that wait.
    for previous, key in zip(provider.keys, provider.keys[1:]):
        assert events.index(("waiting", key)) < events.index(("recorded", previous))

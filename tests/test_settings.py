"""Settings fail early and clearly; secrets are required exactly where real harm is possible."""

from __future__ import annotations

import pytest

from digest.errors import ConfigurationError
from digest.settings import LOCAL_ONLY_SECRET, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no developer .env
    import os

    for key in list(os.environ):
        if key.startswith("DIGEST_") and key != "DIGEST_TEST_DATABASE_URL":
            monkeypatch.delenv(key)


@pytest.mark.parametrize("env,message", [
    ({"DIGEST_TIMEZONE": "Mars/Olympus"}, "DIGEST_TIMEZONE: unknown time zone 'Mars/Olympus'"),
    ({"DIGEST_PROVIDER": "pigeon"}, "DIGEST_PROVIDER: unknown provider 'pigeon'"),
    ({"DIGEST_BASE_URL": "digest.example.com"}, "DIGEST_BASE_URL: base URL"),
])
def test_bad_values_are_named(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_env_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("DIGEST_TIMEZONE=Europe/Berlin\nDIGEST_FROM=News <n@example.com>\n")
    settings = load_settings()
    assert settings.timezone == "Europe/Berlin" and settings.from_ == "News <n@example.com>"


def test_local_outbox_works_without_secret():
    assert load_settings().signing_key() == LOCAL_ONLY_SECRET.encode()


@pytest.mark.parametrize("secret", [None, "changeme", "short"])
def test_real_mail_or_public_app_needs_a_secret(secret):
    kwargs = {"secret_key": secret} if secret else {}
    with pytest.raises(ConfigurationError, match="DIGEST_SECRET_KEY.*secrets.token_urlsafe"):
        load_settings(provider="postmark", **kwargs).signing_key()
    with pytest.raises(ConfigurationError, match="listens beyond localhost"):
        load_settings(**kwargs).signing_key(public=True)


def test_real_secret_is_used():
    key = "k" * 40
    assert load_settings(provider="resend", secret_key=key).signing_key(public=True) == key.encode()

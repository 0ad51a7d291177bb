"""Preflight: the checks that keep a misconfigured real send from going out.

`identity` (offline: the From domain, the public URL, the postal address, the secret) runs
before every real send and refuses it; `dns`, `providers` and `site` (network, read-only) and
`content` run in `digest doctor`. Each check says what it saw and how to fix it (`report`).
"""

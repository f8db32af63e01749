"""``hqstream up``: the gateway it starts is never open, and the URL it prints carries the key."""

from __future__ import annotations

from hqstream.up import _dev_api_key


def test_a_dev_key_is_generated_when_none_is_set() -> None:
    env: dict[str, str] = {}
    key = _dev_api_key(env)
    assert key and len(key) >= 24
    assert env["HQ_GATEWAY_API_KEYS"] == key and env["HQ_GATEWAY_ADMIN_KEYS"] == key
    assert _dev_api_key({}) != key  # one per run


def test_configured_keys_or_auth_off_are_left_alone() -> None:
    for env in (
        {"HQ_GATEWAY_API_KEYS": "mine"},
        {"HQ_GATEWAY_ADMIN_KEYS": "admin"},
        {"HQ_GATEWAY_AUTH": "off"},
    ):
        before = dict(env)
        assert _dev_api_key(env) is None
        assert env == before

"""``hqstream up``: the gateway it starts is never open, and the URL it prints carries the key."""

from __future__ import annotations

from hqstream.up import LocalFeed, _dev_api_key
from schemas.feeds import FeedConfig


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


def test_two_local_feeds_make_a_valid_hq_feeds_list() -> None:
    feeds = [LocalFeed("a", 7070, 9101), LocalFeed("b", 7071, 9102)]
    parsed = [FeedConfig.model_validate(feed.entry()) for feed in feeds]
    assert [(f.name, f.addr, f.priority) for f in parsed] == [
        ("a", "127.0.0.1:7070", 0),
        ("b", "127.0.0.1:7071", 1),
    ]
    assert parsed[1].metrics_url == "http://127.0.0.1:9102/metrics"
    assert parsed[0].token_env == "HQ_FEED_TOKEN"

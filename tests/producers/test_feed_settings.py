"""HQ_FEEDS: a receiver reads the feed it is given, with that feed's token and spool."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from producers.settings import ReceiverSettings

FEEDS = [
    {"name": "a", "addr": "feed-a:7070", "token_env": "HQ_FEED_A_TOKEN"},
    {"name": "b", "addr": "feed-b:7071", "token_env": "HQ_FEED_B_TOKEN", "priority": 1},
]


@pytest.fixture
def feeds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HQ_FEEDS", orjson.dumps(FEEDS).decode())
    monkeypatch.setenv("HQ_FEED_A_TOKEN", "token-of-a")
    monkeypatch.setenv("HQ_FEED_B_TOKEN", "token-of-b")


@pytest.mark.usefixtures("feeds_env")
def test_the_chosen_feed_gives_address_token_source_and_its_own_journal() -> None:
    b = ReceiverSettings(feed="b", journal_dir=Path("spool"))
    assert (b.feed_addr, b.feed_source) == ("feed-b:7071", "b")
    assert b.feed_token.get_secret_value() == "token-of-b"
    assert b.journal_dir == Path("spool/b")
    assert "token-of-b" not in repr(b)


@pytest.mark.usefixtures("feeds_env")
def test_several_feeds_need_a_choice_and_an_unknown_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="choose one with --feed"):
        ReceiverSettings()
    with pytest.raises(ValidationError, match="not in HQ_FEEDS"):
        ReceiverSettings(feed="c")


def test_without_hq_feeds_the_single_feed_is_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HQ_FEEDS", raising=False)
    one = ReceiverSettings(feed_addr="127.0.0.1:7070", journal_dir=Path("spool"))
    assert (one.feed_source, one.journal_dir) == ("vendor", Path("spool"))
    with pytest.raises(ValidationError, match="lists no feeds"):
        ReceiverSettings(feed="a")


def test_a_token_is_only_ever_named_by_an_hq_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HQ_FEEDS", '[{"name": "a", "addr": "x:1", "token_env": "AWS_SECRET"}]')
    with pytest.raises(ValidationError, match="only HQ_"):
        ReceiverSettings()

"""SOURCES_FILE: read and checked, looked up by write key, read again when it changes, and a bad file never
replaces a good one."""

import json
import os

import pytest

from event_collector.exceptions import ConfigError
from event_collector.sources import SourceBook, Sources

KEY_WEB = "wk_web_0123456789abcdef"
KEY_WEB_NEXT = "wk_web_next_0123456789"
KEY_IOS = "wk_ios_0123456789abcdef"

GOOD = f"""
sources:
  - name: web
    write_keys: [{KEY_WEB}, {KEY_WEB_NEXT}]
    allowed_origins: ["https://shop.example.com"]
    rate_limit: 50
  - name: ios-app
    write_keys: [{KEY_IOS}]
    index_prefix: events_mobile
"""


def test_sources_are_found_by_any_of_their_keys_and_name_their_indices():
    book = SourceBook.parse(GOOD, "sources.yaml", "production")
    assert book.by_key(KEY_WEB).name == book.by_key(KEY_WEB_NEXT.encode()).name == "web"
    assert book.by_key(KEY_IOS).prefix == "events_mobile"
    assert book.by_key(KEY_WEB).prefix == "events_web"
    assert book.by_key("wk_unknown_0123456789") is None
    assert book.by_key(KEY_WEB[:-1]) is None


def test_json_is_yaml_too():
    text = json.dumps({"sources": [{"name": "web", "write_keys": [KEY_WEB]}]})
    assert SourceBook.parse(text, "sources.json", "local").by_key(KEY_WEB).name == "web"


@pytest.mark.parametrize("text, says", [
    ("sources: [{name: Web, write_keys: [%s]}]" % KEY_WEB, "$.sources[0].name"),
    ("sources: [{name: my_app, write_keys: [%s]}]" % KEY_WEB, "$.sources[0].name"),
    ("sources: [{name: web, write_keys: []}]", "$.sources[0].write_keys"),
    ("sources: [{name: web, write_keys: [short]}]", "$.sources[0].write_keys[0]"),
    ("sources: [{name: web, write_keys: ['%s:secret']}]" % KEY_WEB, "$.sources[0].write_keys[0]"),
    ("sources: [{name: web, write_keys: [%s], rate_limit: -1}]" % KEY_WEB, "$.sources[0].rate_limit"),
    ("sources: [{name: web, write_keys: [%s], index_prefix: logs_web}]" % KEY_WEB, "$.sources[0].index_prefix"),
    ("sources: [{name: web, write_keys: [%s], allowed_origins: [shop.example.com]}]" % KEY_WEB, "allowed_origins"),
    ("sources: [{name: web, write_keys: [%s], colour: blue}]" % KEY_WEB, "colour"),
    ("sources: [{name: web, write_keys: [%s]}, {name: web, write_keys: [%s]}]" % (KEY_WEB, KEY_IOS), "named twice"),
    ("sources: [{name: a, write_keys: [%s]}, {name: b, write_keys: [%s]}]" % (KEY_WEB, KEY_WEB), "given twice"),
    ("sources: [{name: a, write_keys: [%s], index_prefix: events_production}]" % KEY_WEB, "the JWT API"),
    ("sources: [{name: a, write_keys: [%s]}, {name: b, write_keys: [%s], index_prefix: events_a}]"
     % (KEY_WEB, KEY_IOS), "source 'a'"),
    ("sources: {name: web}", "$.sources"),
    ("sources: [unclosed", "not YAML"),
    ("", "Expected `object`"),
])
def test_a_bad_file_is_refused_naming_what_is_wrong(text, says):
    with pytest.raises(ConfigError, match="^SOURCES_FILE sources.yaml: ") as raised:
        SourceBook.parse(text, "sources.yaml", "production")
    assert says in str(raised.value)


def test_a_change_is_read_again_and_a_bad_one_keeps_the_last_good(tmp_path, caplog):
    path = tmp_path / "sources.yaml"
    path.write_text(GOOD)
    sources = Sources(str(path), "production")
    assert not sources.changed()
    # Keys rotate: the old one goes.
    path.write_text(GOOD.replace(f"{KEY_WEB}, ", ""))
    assert sources.changed() and sources.reload()
    assert sources.book.by_key(KEY_WEB) is None and sources.book.by_key(KEY_WEB_NEXT).name == "web"
    # A typo: refused, said, and the sources read before stay in force; not said again until it changes.
    path.write_text(GOOD.replace("name: web", "name: Web"))
    assert sources.changed() and not sources.reload()
    assert "stay in force" in caplog.text and "$.sources[0].name" in caplog.text
    assert sources.book.by_key(KEY_WEB_NEXT).name == "web"
    assert not sources.changed()
    # Replaced by a rename (what editors and config managers do): seen as a change.
    replacement = tmp_path / "next.yaml"
    replacement.write_text(GOOD)
    os.replace(replacement, path)
    assert sources.changed() and sources.reload()
    assert sources.book.by_key(KEY_WEB).name == "web"


def test_a_file_removed_keeps_the_sources_in_force(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(GOOD)
    sources = Sources(str(path), "production")
    path.unlink()
    assert sources.changed() and not sources.reload()
    assert sources.book.by_key(KEY_IOS).name == "ios-app"


def test_a_bad_file_at_start_up_stops_it(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources: [{name: web}]")
    with pytest.raises(ConfigError, match="write_keys"):
        Sources(str(path), "production")
    with pytest.raises(ConfigError, match="cannot be read"):
        Sources(str(tmp_path / "missing.yaml"), "production")


def test_a_file_over_a_mebibyte_is_refused(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(GOOD + "#" * (1 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        Sources(str(path), "production")

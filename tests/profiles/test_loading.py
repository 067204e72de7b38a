"""Loading YAML and JSON strictly, and the canonical form and content hash."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from grantbox.profiles import (
    canonical_json,
    content_hash,
    export_data,
    load_paths,
    load_text,
    profile_json_schema,
)

PROFILE = {
    "id": "example-api",
    "credentials": [
        {
            "name": "tok",
            "auth_style": "bearer",
            "token_grant": {
                "token_endpoint": "https://auth.example.com/token",
                "scopes": ["read", "write"],
                "audience_overrides": [{"host": "api.example.com", "audience": "x"}],
            },
        }
    ],
    "endpoints": [{"host": "api.example.com", "port": 443}],
}


def test_yaml_with_several_documents_loads_each() -> None:
    second = dict(PROFILE, id="second-api")
    text = yaml.safe_dump(PROFILE) + "---\n" + yaml.safe_dump(second)
    result = load_text(text, "set.yaml")
    assert result.diagnostics == []
    assert [p.profile.id for p in result.profiles] == ["example-api", "second-api"]
    assert [p.source for p in result.profiles] == ["set.yaml#0", "set.yaml#1"]


def test_json_object_and_array_load() -> None:
    assert [p.profile.id for p in load_text(json.dumps(PROFILE), "p.json").profiles] == [
        "example-api"
    ]
    array = json.dumps([PROFILE, dict(PROFILE, id="b")])
    assert len(load_text(array, "p.json").profiles) == 2


def test_unknown_keys_and_enum_values_are_errors() -> None:
    doc = json.loads(json.dumps(PROFILE))
    doc["credentials"][0]["token_grant"]["audience_overrides"][0]["hots"] = "typo"
    doc["credentials"][0]["auth_style"] = "Bearer"
    result = load_text(json.dumps(doc), "p.json")
    assert result.profiles == []
    fields = sorted(d.field for d in result.diagnostics)
    assert fields == [
        "credentials[0].auth_style",
        "credentials[0].token_grant.audience_overrides[0].hots",
    ]
    assert all(d.profile == "example-api" for d in result.diagnostics)


def test_duplicate_yaml_keys_are_refused_rather_than_silently_overwritten() -> None:
    text = "id: a\nid: b\n"
    result = load_text(text, "dup.yaml")
    assert result.profiles == []
    assert "duplicate key" in result.diagnostics[0].message


def test_unparseable_input_says_where() -> None:
    result = load_text("id: [unclosed", "broken.yaml")
    assert result.profiles == []
    assert result.diagnostics[0].profile == "broken.yaml"
    assert "cannot parse" in result.diagnostics[0].message


def test_a_directory_loads_its_profile_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(dict(PROFILE, id="b")))
    (tmp_path / "a.json").write_text(json.dumps(dict(PROFILE, id="a")))
    (tmp_path / "notes.txt").write_text("ignored")
    result = load_paths([tmp_path])
    assert [p.profile.id for p in result.profiles] == ["a", "b"]


def test_an_empty_directory_is_reported(tmp_path: Path) -> None:
    result = load_paths([tmp_path])
    assert result.profiles == []
    assert "no .yaml" in result.diagnostics[0].message


def _shuffle(value: object, data: st.DataObject) -> object:
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffle(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_shuffle(v, data) for v in value]
    return value


@given(st.data(), st.sampled_from(["json", "yaml", "yaml-flow"]), st.booleans())
def test_the_hash_ignores_key_order_formatting_and_spelled_out_defaults(
    data: st.DataObject, fmt: str, spell_defaults: bool
) -> None:
    doc = _shuffle(json.loads(json.dumps(PROFILE)), data)
    assert isinstance(doc, dict)
    if spell_defaults:
        doc["credentials"][0]["required"] = False
        doc["endpoints"][0]["tls"] = "auto"
        doc["endpoints"][0]["host"] = "API.Example.com"
    if fmt == "json":
        text = json.dumps(doc, indent=data.draw(st.sampled_from([None, 2, 4])))
    else:
        text = yaml.safe_dump(doc, default_flow_style=fmt == "yaml-flow", sort_keys=False)
    (reference,) = load_text(json.dumps(PROFILE), "r.json").profiles
    (loaded,) = load_text(text, f"p.{fmt.split('-')[0]}").profiles
    assert canonical_json(loaded.profile) == canonical_json(reference.profile)
    assert content_hash(loaded.profile) == content_hash(reference.profile)


def test_the_hash_changes_when_meaning_changes() -> None:
    (a,) = load_text(json.dumps(PROFILE), "a.json").profiles
    changed = json.loads(json.dumps(PROFILE))
    changed["credentials"][0]["token_grant"]["scopes"] = ["read"]
    (b,) = load_text(json.dumps(changed), "b.json").profiles
    assert content_hash(a.profile) != content_hash(b.profile)


def test_resource_version_is_metadata_not_content() -> None:
    (a,) = load_text(json.dumps(PROFILE), "a.json").profiles
    (b,) = load_text(json.dumps(dict(PROFILE, resource_version=7)), "b.json").profiles
    assert content_hash(a.profile) == content_hash(b.profile)
    assert export_data(b.profile)["resource_version"] == 7


def test_export_round_trips() -> None:
    (a,) = load_text(json.dumps(PROFILE), "a.json").profiles
    (b,) = load_text(yaml.safe_dump(export_data(a.profile)), "b.yaml").profiles
    assert a.profile == b.profile


def test_json_schema_describes_the_document() -> None:
    schema = profile_json_schema()
    assert schema["title"] == "grantbox provider profile"
    assert schema["additionalProperties"] is False
    assert "token_endpoint" in json.dumps(schema)

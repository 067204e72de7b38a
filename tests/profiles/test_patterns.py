"""The one pattern matcher: examples first, then properties checked against brute force."""

from __future__ import annotations

import itertools
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.profiles import (
    PatternError,
    host_intersection,
    host_matches,
    host_specificity,
    hosts_overlap,
    parse_host_pattern,
    parse_path_pattern,
    path_intersection,
    path_matches,
    path_specificity,
    paths_overlap,
    request_path,
)

# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.COM", True),
        ("API.example.com", "api.example.com", True),
        ("api.example.com", "api.example.com.", True),
        ("api.example.com", "x.api.example.com", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("**.example.com", "a.example.com", True),
        ("**.example.com", "a.b.example.com", True),
        ("**.example.com", "example.com", False),
        ("*.example.com", ".example.com", False),
        ("**.example.com", "a..example.com", False),
        ("api.*.com", "api.example.com", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "[::1]", True),
        ("[::1]", "0:0:0:0:0:0:0:1", True),
        ("*.example.com", "*.example.com", False),
        ("*.example.com", "", False),
    ],
)
def test_host_matching_examples(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


@pytest.mark.parametrize(
    "pattern",
    ["", " api.example.com", "a..b", "api.**.com", "**", "foo*.example.com", "a_b!.com", "::zz"],
)
def test_invalid_host_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        parse_host_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("", "/anything/at/all", True),
        ("**", "/x", True),
        ("/**", "/", True),
        ("/v1/**", "/v1", True),
        ("/v1/**", "/v1/", True),
        ("/v1/**", "/v1/chat/messages", True),
        ("/v1/**", "/v10", False),
        ("/v1/**", "/v2/x", False),
        ("/v1/*", "/v1/chat", True),
        ("/v1/*", "/v1/chat/messages", False),
        ("/v1/*", "/v1/", False),
        ("/v1/chat", "/v1/chat?x=/v1/other", True),
        ("/v1/chat", "/v1/chat#frag", True),
        ("/v1/chat", "/v1/Chat", False),
        ("/v1/*/items", "/v1/a/items", True),
        ("/", "/", True),
        ("/", "/x", False),
    ],
)
def test_path_matching_examples(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


@pytest.mark.parametrize("pattern", ["v1/x", "/v1/**/x", "/v1/a*", "/v1?x", "/a/../b", " /v1"])
def test_invalid_path_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        parse_path_pattern(pattern)


def test_the_query_string_is_never_part_of_a_match() -> None:
    assert request_path("/a/b?c=d") == "/a/b"
    assert request_path("?x") == "/"
    assert not path_matches("/a/b/**", "/a?b/c")


@pytest.mark.parametrize(
    ("narrow", "broad"),
    [
        ("api.example.com", "*.example.com"),
        ("*.example.com", "**.example.com"),
        ("*.*.example.com", "**.example.com"),
        ("**.a.example.com", "**.example.com"),
        ("a.b.example.com", "**.example.com"),
    ],
)
def test_narrower_hosts_are_more_specific(narrow: str, broad: str) -> None:
    n, b = parse_host_pattern(narrow), parse_host_pattern(broad)
    assert host_specificity(n) > host_specificity(b)


@pytest.mark.parametrize(
    ("narrow", "broad"),
    [
        ("/v1/admin/**", "/v1/**"),
        ("/v1/x", "/v1/**"),
        ("/v1/*", "/v1/**"),
        ("/v1/x", "/v1/*"),
        ("/a", ""),
    ],
)
def test_narrower_paths_are_more_specific(narrow: str, broad: str) -> None:
    n, b = parse_path_pattern(narrow), parse_path_pattern(broad)
    assert path_specificity(n) > path_specificity(b)


def test_every_spelling_of_any_path_is_the_same_pattern() -> None:
    assert parse_path_pattern("") == parse_path_pattern("**") == parse_path_pattern("/**")


# --------------------------------------------------------------------------- properties

HOST_LABELS = ["a", "b", "c"]
WITNESS_LABELS = ["a", "b", "c", "z"]


@st.composite
def host_patterns(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.sampled_from([*HOST_LABELS, "*"]), min_size=1, max_size=3))
    if draw(st.booleans()):
        labels = ["**", *labels]
    return ".".join(labels)


@cache
def witness_hosts() -> tuple[str, ...]:
    hosts = []
    for length in range(1, 6):
        for labels in itertools.product(WITNESS_LABELS, repeat=length):
            hosts.append(".".join(labels))
    return tuple(hosts)


@cache
def host_set(pattern: str) -> frozenset[str]:
    parsed = parse_host_pattern(pattern)
    return frozenset(h for h in witness_hosts() if host_matches(parsed, h))


@given(st.lists(st.sampled_from(HOST_LABELS), min_size=1, max_size=4), st.data())
def test_a_literal_host_matches_only_itself_case_insensitively(
    labels: list[str], data: st.DataObject
) -> None:
    literal = ".".join(labels)
    mixed = "".join(c.upper() if data.draw(st.booleans()) else c for c in literal)
    assert host_matches(literal, mixed)
    assert host_matches(mixed, literal)
    assert host_set(literal) == {literal}


@given(st.lists(st.sampled_from(WITNESS_LABELS), min_size=1, max_size=4))
def test_a_single_wildcard_never_matches_the_bare_suffix(labels: list[str]) -> None:
    suffix = ".".join(labels)
    assert not host_matches(f"*.{suffix}", suffix)
    assert not host_matches(f"**.{suffix}", suffix)


@settings(max_examples=300)
@given(host_patterns(), host_patterns())
def test_host_overlap_and_intersection_agree_with_brute_force(a: str, b: str) -> None:
    pa, pb = parse_host_pattern(a), parse_host_pattern(b)
    both = host_set(a) & host_set(b)
    assert hosts_overlap(pa, pb) == hosts_overlap(pb, pa) == bool(both)
    meet = host_intersection(pa, pb)
    if meet is None:
        assert not both
    else:
        assert frozenset(h for h in witness_hosts() if host_matches(meet, h)) == both


@settings(max_examples=300)
@given(host_patterns(), host_patterns())
def test_host_specificity_is_strict_on_distinct_overlapping_patterns(a: str, b: str) -> None:
    pa, pb = parse_host_pattern(a), parse_host_pattern(b)
    if pa == pb or not hosts_overlap(pa, pb):
        return
    assert host_specificity(pa) != host_specificity(pb)
    sa, sb = host_set(a), host_set(b)
    if sa < sb:
        assert host_specificity(pa) > host_specificity(pb)
    if sb < sa:
        assert host_specificity(pb) > host_specificity(pa)


PATH_SEGMENTS = ["a", "b"]
WITNESS_SEGMENTS = ["a", "b", "z", ""]


@st.composite
def path_patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from([*PATH_SEGMENTS, "*"]), min_size=0, max_size=3))
    if not segments or draw(st.booleans()):
        segments = [*segments, "**"]
    return "/" + "/".join(segments)


@cache
def witness_paths() -> tuple[str, ...]:
    paths = []
    for length in range(1, 6):
        for segments in itertools.product(WITNESS_SEGMENTS, repeat=length):
            paths.append("/" + "/".join(segments))
    return tuple(paths)


@cache
def path_set(pattern: str) -> frozenset[str]:
    parsed = parse_path_pattern(pattern)
    return frozenset(p for p in witness_paths() if path_matches(parsed, p))


@settings(max_examples=300)
@given(path_patterns(), path_patterns())
def test_path_overlap_and_intersection_agree_with_brute_force(a: str, b: str) -> None:
    pa, pb = parse_path_pattern(a), parse_path_pattern(b)
    both = path_set(a) & path_set(b)
    assert paths_overlap(pa, pb) == paths_overlap(pb, pa) == bool(both)
    meet = path_intersection(pa, pb)
    if meet is None:
        assert not both
    else:
        assert frozenset(p for p in witness_paths() if path_matches(meet, p)) == both


@settings(max_examples=300)
@given(path_patterns(), path_patterns())
def test_path_specificity_is_strict_on_distinct_overlapping_patterns(a: str, b: str) -> None:
    pa, pb = parse_path_pattern(a), parse_path_pattern(b)
    if pa == pb or not paths_overlap(pa, pb):
        return
    assert path_specificity(pa) != path_specificity(pb)
    sa, sb = path_set(a), path_set(b)
    if sa < sb:
        assert path_specificity(pa) > path_specificity(pb)
    if sb < sa:
        assert path_specificity(pb) > path_specificity(pa)


@given(path_patterns())
def test_a_literal_path_matches_only_itself(pattern: str) -> None:
    parsed = parse_path_pattern(pattern)
    if not parsed.is_literal:
        return
    assert path_set(pattern) == {pattern}

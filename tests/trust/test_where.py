"""Metadata filters (issue 15): a real grammar, escaped Milvus expressions, the same answers in Milvus and in the data index."""

from __future__ import annotations

from typing import Any

import pytest

from kbrelease.errors import QueryError
from kbrelease.trust.where import FilterError, parse_where

ROWS: list[dict[str, Any]] = [
    {"id": "a", "user": {"camera_id": "front", "speed": 3, "tags": ["a", "b"], "ok": True}, "time": 100},
    {"id": "b", "user": {"camera_id": "rear", "speed": 5.5}, "time": 200},
    {"id": "c", "user": {}},  # a row without metadata: what releases built before issue 15 have
    {"id": "d", "user": {"camera_id": 'fr"ont\\ x', "speed": 1}, "time": 300},
]
FILTERS = [
    'camera_id == "front"',
    'not camera_id == "front"',
    "speed > 3",
    'camera_id in ["front", "rear"]',
    'camera_id not in ["front"]',
    "ok == True",
    'camera_id == "front" or speed < 2',
    "1 < speed <= 5.5",
    "3 <= speed",
    'camera_id == "fr\\"ont\\\\ x"',
    'camera_id == "x\\" or 1==1 or \\""',
    "missing != 1",
    '"a" in tags',
    '"b" not in tags',
    'not (camera_id == "rear" and speed > 5)',
    'camera_id != "front"',
    'not (speed > 3 or camera_id == "rear")',
    "ok != True",
    "not ok == False",
    'not not camera_id == "rear"',
    'speed != "3"',
]


def test_filters_become_expressions_with_every_literal_escaped() -> None:
    f = parse_where('camera_id == "front" and (speed > 3 or weather in ["sun", "rain"])')
    assert f is not None
    assert f.milvus() == (
        '((metadata["user"]["camera_id"] == "front") and ((metadata["user"]["speed"] > 3) or '
        '(metadata["user"]["weather"] == "sun" or metadata["user"]["weather"] == "rain")))'
    )
    assert parse_where("   ") is None and parse_where(None) is None
    negated = parse_where('not (camera_id == "x" or ok != True)')
    assert negated is not None
    assert negated.milvus() == '(((metadata["user"]["camera_id"] < "x" or metadata["user"]["camera_id"] > "x")) and (metadata["user"]["ok"] == true))'
    with pytest.raises(FilterError, match="no order"):
        parse_where("ok < True")
    assert parse_where('"front" == camera_id').tree == parse_where('camera_id == "front"').tree  # type: ignore[union-attr]  # literal first: flipped
    quoted = parse_where('note == "a\\" or metadata[\\"user\\"] != \\"\\n"')
    assert quoted is not None
    # The user's quote and backslash are inside one string literal, escaped: the expression has exactly one ==.
    assert quoted.milvus() == '(metadata["user"]["note"] == "a\\" or metadata[\\"user\\"] != \\"\\n")'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('__import__("os").system("id")', "call is not allowed"),
        ("camera_id", "alone is not a condition"),
        ('metadata["x"] == 1', "one metadata key and one literal"),
        ("a.b == 1", "one metadata key and one literal"),
        ("speed > 1 + 2", "binop is not a literal"),
        ("speed + 1 > 3", "one metadata key and one literal"),
        ("speed > other", "one metadata key and one literal"),
        ("1 == 1", "one metadata key and one literal"),
        ("speed is None", "operator Is is not allowed"),
        ("speed == None", "NoneType literals are not allowed"),
        ('camera_id == "x" ; drop', "not valid"),
        ('camera_id == "x") or (1 == 1', "not valid"),
        ('camera_id == "front" || id != ""', "not valid"),
        ("camera_id == f'{x}'", "joinedstr is not a literal"),
        ("(lambda: 1)() == 1", "one metadata key and one literal"),
        ('camera_id == "a" or print("x")', "call is not allowed"),
        ("speed == 1e999", "not finite"),
        ("speed == 99999999999999999999", "64-bit"),
        ("camera_id in []", "1 to 100 values"),
        ("camera_id in tags", "must be a list of literals"),
        ("x" * 65 + " == 1", "is not a metadata key"),
        ("a==1 or " * 120 + "a==1", "more than 200"),
        ("(" * 5000 + "a == 1" + ")" * 5000, "over 2,000"),
        ("a == 1\0", "NUL"),
    ],
)
def test_bad_filters_are_refused_naming_the_problem(text: str, named: str) -> None:
    with pytest.raises(FilterError, match=named) as info:
        parse_where(text)
    assert isinstance(info.value, QueryError) and info.value.exit_code == 2  # CLI exit 2; HTTP 400 (bad_query)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(FilterError):
        parse_where("not " * 600 + "a == 1")
    with pytest.raises(FilterError):
        parse_where("(" * 900 + "a == 1" + ")" * 900)


@pytest.mark.parametrize("server", ["lite_server", pytest.param("milvus_server", marks=[pytest.mark.milvus_server, pytest.mark.slow])])
def test_milvus_and_the_data_index_agree_on_every_filter(server: str, request: pytest.FixtureRequest) -> None:
    """Each filter's Milvus expression selects the same rows as its Python evaluation of the data index, on Milvus Lite and
    on Milvus 2.3.5 (which differ on `not` and `!=` over a missing key: negations are pushed down so both agree)."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(request.getfixturevalue(server))
    name = "where_agreement"
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=8)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    schema.add_field("metadata", DataType.JSON)
    index = client.prepare_index_params()
    index.add_index("vector", metric_type="COSINE", index_type="FLAT")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Session")
    # Row "c" has no "user" key at all, as rows of releases built before user metadata.
    rows = [
        {"id": r["id"], "vector": [1.0, 0.1 * i], "metadata": {k: v for k, v in r.items() if k == "time" or (k == "user" and v)}} for i, r in enumerate(ROWS)
    ]
    client.insert(name, rows)
    client.load_collection(name)
    try:
        for text in FILTERS:
            f = parse_where(text)
            assert f is not None
            hits = client.search(name, [[1.0, 0.0]], limit=10, filter=f.milvus(), output_fields=["id"])[0]
            in_milvus = sorted(h["id"] for h in hits)
            in_python = sorted(r["id"] for r in ROWS if f.matches(r["user"]))
            assert in_milvus == in_python, text
    finally:
        client.drop_collection(name)

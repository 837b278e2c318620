"""A batch's items are validated as ``LinkFields`` dicts: what they accept, ``LinkRequest`` does.

``mint.ITEMS`` validates a batch in one call without a model per item; any item it
refuses sends the batch through ``LinkRequest`` item by item, whose errors are the
answer. So the one thing that must never happen is ``LinkFields`` accepting what
``LinkRequest`` refuses, or reading a field otherwise. ``supersede`` without a
subject is the one rule ``LinkFields`` leaves to the minting code.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from service.schemas import LinkFields, LinkRequest
from tests.support.scale import scaled

FIELDS = TypeAdapter(LinkFields)
EXAMPLES = settings(
    max_examples=scaled(500, 20_000),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def test_the_same_fields() -> None:
    assert set(LinkFields.__annotations__) == set(LinkRequest.model_fields)
    required = [name for name, field in LinkRequest.model_fields.items() if field.is_required()]
    assert FIELDS.json_schema()["required"] == required == ["action"]


text = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "go", "a\x00b", "x" * 64, "x" * 65, "y" * 201, "https://a.example/x"]),
    st.text(min_size=2040, max_size=2050, alphabet="u"),
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([2_000_000_000, 2_000_000_001, 2**70]),
    st.floats(),
    text,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers() | st.floats() | text, max_size=2),
    st.sampled_from(["\ud800", {"\udc00": 1}, [[[[1]]]] * 9, float("nan")]),
)
deep = st.integers(30, 34).map(lambda n: [[]] if n == 0 else eval("[" * n + "]" * n))
field_names = sorted(LinkRequest.model_fields) + ["extra"]
items = st.dictionaries(
    st.sampled_from(field_names), st.one_of(anything, deep), max_size=len(field_names)
)


def as_request(item: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return dict(LinkRequest.model_validate(item))
    except ValidationError:
        return None


def as_fields(item: dict[str, Any]) -> dict[str, Any] | None:
    try:
        fields = FIELDS.validate_python(item)
    except ValidationError:
        return None
    if fields.get("supersede") and fields.get("subject") is None:
        return None  # the minting code's to refuse (test_mint_api.py)
    defaults = {name: field.default for name, field in LinkRequest.model_fields.items()}
    return {name: fields.get(name, defaults[name]) for name in LinkRequest.model_fields}


@EXAMPLES
@given(items)
def test_what_the_fields_accept_the_request_accepts_as_the_same_values(
    item: dict[str, Any],
) -> None:
    fields = as_fields(item)
    if fields is not None:
        assert as_request(item) == fields


@EXAMPLES
@given(
    st.fixed_dictionaries(
        {"action": st.sampled_from(["go", "a.b:c-1"])},
        optional={
            "subject": st.none() | st.text(max_size=5),
            "data": anything,
            "expires_in": st.none() | st.integers(1, 10**6),
            "max_uses": st.none() | st.integers(1, 10),
            "once_key": st.none() | st.text(min_size=1, max_size=5),
            "success_url": st.none() | st.just("https://a.example/x"),
            "failure_url": st.none() | st.just("https://a.example/y"),
            "code": st.none() | st.booleans(),
            "supersede": st.booleans(),
        },
    )
)
def test_what_the_request_accepts_the_fields_accept(item: dict[str, Any]) -> None:
    """Not needed for correctness (a refusal only costs a second validation), but it
    is what makes a batch cheap: the two agree on valid items too."""
    request = as_request(item)
    if request is not None:
        assert as_fields(item) == request


@pytest.mark.parametrize(
    "item",
    [
        {"action": "go", "subject": "a\x00b"},
        {"action": "a\x00b"},
        {"action": "go", "success_url": "a\x00"},
        {"action": "go", "data": float("nan")},
        {"action": "go", "data": {"k": "\ud800"}},
        {"action": "go", "max_uses": True},
        {"action": "go", "expires_in": 1.0},
        {"action": "go", "code": 1},
        {"action": "go", "extra": 1},
        {"subject": "42"},
    ],
)
def test_both_refuse(item: dict[str, Any]) -> None:
    assert as_request(item) is None
    assert as_fields(item) is None

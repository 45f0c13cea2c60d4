"""Schema generation units: clean_schema, docstring parsing, models from signatures.

Every tool here is built inside its test (not at import), so what is checked is what the code
under test computes while the test runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from agentkit.tools.schema import clean_schema, model_from_signature, model_schema, parse_docstring


def test_clean_schema_drops_titles_but_keeps_properties_and_definitions_named_title() -> None:
    raw = {
        "title": "NoteArgs",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string"},
            "body": {"title": "Body", "type": "string", "examples": [{"title": "x"}]},
        },
        "$defs": {"title": {"title": "Title", "type": "object", "properties": {}}},
        "required": ["title"],
    }
    assert clean_schema(raw) == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "body": {"type": "string", "examples": [{}]},
        },
        "$defs": {"title": {"type": "object", "properties": {}}},
        "required": ["title"],
    }
    # a "title" key whose value is not a string is data, not pydantic's label
    assert clean_schema({"const": {"title": {"a": 1}}})["const"] == {"title": {"a": 1}}
    # the input is not changed
    assert raw["title"] == "NoteArgs"


def test_clean_schema_fills_in_an_object_without_type_or_properties() -> None:
    assert clean_schema({}) == {"type": "object", "properties": {}}
    assert clean_schema({"title": "Empty"}) == {"type": "object", "properties": {}}
    kept = clean_schema({"type": "string", "properties": {"a": {"type": "integer"}}})
    assert kept == {"type": "string", "properties": {"a": {"type": "integer"}}}


def test_model_schema_of_a_model_with_a_nested_model() -> None:
    class Inner(BaseModel):
        title: str
        size: int = 1

    class Outer(BaseModel):
        inner: Inner
        note: str | None = None

    schema = model_schema(Outer)
    assert "title" not in schema
    assert schema["$defs"]["Inner"] == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "size": {"type": "integer", "default": 1}},
        "required": ["title"],
    }
    assert schema["properties"]["inner"] == {"$ref": "#/$defs/Inner"}
    assert schema["required"] == ["inner"]


def test_docstring_sections_args_arguments_parameters() -> None:
    for header in ("Args", "Arguments", "Parameters", "args"):
        description, params = parse_docstring(
            f"""Summary line.

            {header}:
                a: first.
            """
        )
        assert description == "Summary line."
        assert params == {"a": "first."}, header


def test_docstring_other_sections_are_skipped_not_the_end() -> None:
    description, params = parse_docstring(
        """Summary.

        Returns:
            str: the text.

        Raises:
            ValueError: when bad.

        Args:
            a: first.
            b (int): second.

        Example:
            x: not a parameter
        """
    )
    assert description == "Summary."
    assert params == {"a": "first.", "b": "second."}


def test_docstring_continuation_lines_that_look_like_parameters() -> None:
    """A deeper-indented ``word: text`` line continues the parameter above it."""
    _, params = parse_docstring(
        """Do it.

        Args:
            mode: how to run; one of
                fast: skip checks,
                slow: check everything.
            level: how loud.
        """
    )
    assert params == {
        "mode": "how to run; one of fast: skip checks, slow: check everything.",
        "level": "how loud.",
    }


def test_docstring_without_sections_or_text() -> None:
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("") == ("", {})
    assert parse_docstring("Only a line.") == ("Only a line.", {})
    assert parse_docstring("Line one.\n\nLine two.\n") == ("Line one.\n\nLine two.", {})
    # a section header with nothing after it
    assert parse_docstring("Text.\n\nArgs:\n") == ("Text.", {})


def test_model_from_signature_required_defaults_and_descriptions() -> None:
    def fetch_all_items(
        query: str,
        limit: Annotated[int, Field(ge=1)] = 5,
        raw=None,
        undocumented: bool = False,
    ) -> None:
        """Fetch.

        Args:
            query: what to fetch.
            limit: at most this many.
            raw: anything at all.
        """

    model = model_from_signature(fetch_all_items)
    assert model.__name__ == "FetchAllItemsArgs"
    schema = model_schema(model)
    assert schema["required"] == ["query"]
    props = schema["properties"]
    assert props["query"] == {"type": "string", "description": "what to fetch."}
    assert props["limit"] == {
        "type": "integer",
        "minimum": 1,
        "default": 5,
        "description": "at most this many.",
    }
    assert props["raw"] == {"default": None, "description": "anything at all."}
    assert props["undocumented"] == {"type": "boolean", "default": False}

    parsed = model.model_validate({"query": "q"})
    assert parsed.model_dump() == {"query": "q", "limit": 5, "raw": None, "undocumented": False}
    # an unannotated parameter takes anything
    assert model.model_validate({"query": "q", "raw": [1, {"a": 2}]}).raw == [1, {"a": 2}]  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="query"):
        model.model_validate({})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        model.model_validate({"query": "q", "limit": 0})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate({"query": "q", "other": 1})


class Context(BaseModel):
    pass


class SubContext(Context):
    pass


def test_model_from_signature_name_and_skipped_parameters() -> None:
    def go(ctx: SubContext, target: str) -> None:
        """Go."""

    assert model_from_signature(go, name="Custom").__name__ == "Custom"
    assert list(model_from_signature(go, skip=(Context,)).model_fields) == ["target"]
    assert list(model_from_signature(go).model_fields) == ["ctx", "target"]


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_model_from_signature_refuses_star_parameters(kind: str) -> None:
    def with_args(a: int, *rest: int) -> None:
        """With *args."""

    def with_kwargs(a: int, **rest: Any) -> None:
        """With **kwargs."""

    fn = with_args if kind == "args" else with_kwargs
    with pytest.raises(TypeError, match=rf"tool function {fn.__name__} may not take \*args"):
        model_from_signature(fn)

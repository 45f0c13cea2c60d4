"""JSON Schema generation for tool arguments, from a pydantic model or a function signature."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` without pydantic's ``title`` noise (property names are kept)."""

    def walk(node: Any, *, in_properties: bool = False) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "title" and not in_properties and isinstance(value, str):
                    continue
                out[key] = walk(value, in_properties=key in ("properties", "$defs"))
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    cleaned: dict[str, Any] = walk(schema)
    cleaned.setdefault("type", "object")
    cleaned.setdefault("properties", {})
    return cleaned


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The input schema sent to the model for ``model`` (no titles, no extra keys allowed)."""
    return clean_schema(model.model_json_schema())


_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_ARG_LINE = re.compile(r"^(\s+)(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {param: description})."""
    if not doc:
        return "", {}
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    indent: int | None = None
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1).lower()
            indent = current = None
            continue
        if section is None:
            description.append(line)
            continue
        if section not in ("args", "arguments", "parameters"):
            continue
        match = _ARG_LINE.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            current = match.group(2)
            params[current] = match.group(3).strip()
        elif current and line.strip():
            params[current] = f"{params[current]} {line.strip()}"
    return "\n".join(description).strip(), params


def model_from_signature(
    fn: Callable[..., Any], *, skip: tuple[type, ...] = (), name: str | None = None
) -> type[BaseModel]:
    """Build a pydantic model from ``fn``'s parameters (type hints + docstring descriptions).

    Parameters whose annotation is one of ``skip`` (e.g. the tool context) are left out.
    """
    hints = get_type_hints(fn, include_extras=True)
    _, param_docs = parse_docstring(fn.__doc__)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        annotation = hints.get(pname, Any)
        if isinstance(annotation, type) and skip and issubclass(annotation, skip):
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool function {fn.__name__} may not take *args or **kwargs")
        default = ... if param.default is inspect.Parameter.empty else param.default
        # Annotated[...] keeps constraints the hint carries (Field(ge=1), ...) and adds the doc.
        doc = param_docs.get(pname)
        described = Annotated[annotation, Field(description=doc)] if doc else annotation
        fields[pname] = (described, default)
    model_name = name or "".join(part.title() for part in fn.__name__.split("_")) + "Args"
    model: type[BaseModel] = create_model(
        model_name, __config__=ConfigDict(extra="forbid"), **fields
    )
    return model

"""The parameters' reference (docs/params.md) in words, generated from the schema in
`pipeline.core.params`: one table per block with each key's type, constraints and meaning.
Kept apart from the schema so that a change of wording re-runs no stage (every stage imports
the schema, and DVC re-runs a stage whose code changed).
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from pipeline.core.params import (
    MAX_PATCHES_PER_IMAGE,
    NAME_PATTERN,
    NAME_WORDS,
    REFERENCE_IMAGE,
    Params,
)

BOUND_SYMBOLS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _constraints(metadata: list[Any]) -> list[str]:
    """Constraints of a field or an ``Annotated`` type in words (``>= 0``, ``non-empty``)."""
    words = []
    for item in metadata:
        for m in getattr(item, "metadata", [item]):  # a Field() inside Annotated holds its own
            words += [
                f"{s} {getattr(m, a)}" for a, s in BOUND_SYMBOLS if getattr(m, a, None) is not None
            ]
            if getattr(m, "pattern", None) == NAME_PATTERN:
                words.append(NAME_WORDS)
            elif getattr(m, "pattern", None):
                words.append(f"(matching `{m.pattern}`)")
            elif getattr(m, "min_length", None) == 1:
                words.append("(non-empty)")
    named = NAME_WORDS in words
    return [w for w in words if not (named and w == "(non-empty)")]  # a name is never empty


def _type_text(annotation: Any) -> str:
    """A type annotation in words: ``list of float > 0``, ``int >= 0 or 'auto'``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return " ".join([_type_text(args[0]), *_constraints(list(args[1:]))])
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"mapping of {_type_text(args[0])} to {_type_text(args[1])}"
    if annotation is Any:
        return "anything"
    if origin in (Union, UnionType):
        return " or ".join("null" if a is type(None) else _type_text(a) for a in args)
    return "path" if annotation is Path else getattr(annotation, "__name__", str(annotation))


def _field_rule(field: Any) -> str:
    """A field's type and constraints in words; a list's least length comes before its items'
    type (``non-empty list of str (non-empty)``, ``list of 2 or more str``)."""
    words = _constraints(field.metadata)
    least = next((m.min_length for m in field.metadata if getattr(m, "min_length", None)), None)
    if least is None or get_origin(field.annotation) is not list:
        return " ".join([_type_text(field.annotation), *words])
    item = _type_text(get_args(field.annotation)[0])
    text = f"non-empty list of {item}" if least == 1 else f"list of {least} or more {item}"
    return " ".join([text, *(w for w in words if w != "(non-empty)")])


def reference() -> str:
    """Every parameter as Markdown: one table per block with its key, rule and meaning
    (``docs/params.md`` is this text; `python -m pipeline.core.params_reference` prints it)."""
    lines = [
        "# Parameters",
        "",
        "Every key of `params.yaml`, generated from its schema (`pipeline/core/params.py`) by",
        "`python -m pipeline.core.params_reference`. Relations between keys are checked too:",
        "the training and evaluation splits differ, the scales and overlap give at most "
        f"{MAX_PATCHES_PER_IMAGE:,}",
        f"patches for a {REFERENCE_IMAGE[0]}x{REFERENCE_IMAGE[1]} image, and no class is listed "
        "twice.",
    ]

    def table(model: Any, prefix: str) -> None:
        rows = []
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                table(field.annotation, f"{prefix}{name}.")
                continue
            rows.append(f"| `{prefix}{name}` | {_field_rule(field)} | {field.description} |")
        if rows:
            title = prefix.rstrip(".") or "top level"
            doc = (model.__doc__ or "").strip().splitlines()[0]
            lines.extend(
                [
                    "",
                    f"## {title}",
                    "",
                    doc,
                    "",
                    "| key | rule | meaning |",
                    "| --- | --- | --- |",
                    *rows,
                ]
            )

    table(Params, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")

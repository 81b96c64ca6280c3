"""The one JSON parser of the API: a body nested past ``MAX_DEPTH`` is malformed, not a 500."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DrfJSONParser

# No request of the API nests deeper than a few levels (an order: body → lines → line →
# money); 32 leaves room and keeps every later walk of the data far from the recursion limit.
MAX_DEPTH = 32


def json_depth(value: Any) -> int:
    """How many arrays and objects nest in ``value``, counted without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class JSONParser(DrfJSONParser):
    """DRF's parser; the decoder's ``RecursionError`` and deep nesting are a ``ParseError``."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            data = None
        else:
            if json_depth(data) <= MAX_DEPTH:
                return data
        raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")

"""Input lines of a batch job into rows: the id, the request fields, or the error that makes the line unusable.

A line is a JSON object with an `id` (a string or an integer) and the body of a server request: `prompt` (as
/v1/completions) or `messages` (as /v1/chat/completions), with the server's generation options. A line that is not
such an object, has no usable id, or repeats an id becomes an error row keyed by its line number; everything else
(the request itself) is checked where the model is, by `runner.py`, with the server's validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..server.errors import BadRequest


@dataclass
class Row:
    line: int  # 1-based line number in the input
    id: Any = None  # the row's id; None when the line has no usable one
    body: dict | None = None  # the request fields, without `id`
    error: dict | None = None  # set when the line itself is unusable (OpenAI's error object)

    @property
    def key(self) -> str:
        return row_key(self.output_base())

    def output_base(self) -> dict:
        """The first fields of this row's output: its id, and its line when the id cannot name it."""
        if self.error is not None:
            return {"id": self.id, "line": self.line}
        return {"id": self.id}

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "id": self.id, "body": self.body}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Row:
        data = json.loads(text)
        return cls(data["line"], data["id"], data["body"])


def row_key(output: dict) -> str:
    """What names an output row across runs (for --resume): its line when it has one, else its id."""
    if "line" in output:
        return f"line:{output['line']}"
    return "id:" + json.dumps(output["id"], ensure_ascii=False)


def read_rows(path: Path) -> Iterator[Row]:
    """Every non-blank line of `path` as a Row, in order; the file is read as it goes."""
    seen: dict[str, int] = {}  # id key -> line of its first use
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            yield _row(number, text, seen)


def _row(number: int, text: str, seen: dict[str, int]) -> Row:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(number, error=_error(f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})"))
    if not isinstance(data, dict):
        return Row(number, error=_error(f"line {number} must be a JSON object, got {type(data).__name__}"))
    if "id" not in data:
        return Row(number, error=_error(f"line {number} has no 'id'", param="id"))
    row_id = data.pop("id")
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        return Row(
            number,
            error=_error(
                f"line {number}: id must be a string or an integer, got {json.dumps(row_id)[:60]}", param="id"
            ),
        )
    key = "id:" + json.dumps(row_id, ensure_ascii=False)
    if key in seen:
        return Row(number, row_id, error=_error(f"line {number} repeats the id of line {seen[key]}", param="id"))
    seen[key] = number
    return Row(number, row_id, data)


def _error(message: str, param: str | None = None) -> dict:
    return BadRequest(message, param=param).body()["error"]


def error_row(row: Row, error: dict) -> dict:
    return {**row.output_base(), "error": error}


def malformed_row(row: Row) -> dict:
    return error_row(row, row.error)

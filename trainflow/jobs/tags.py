"""The column a job's tags live in: JSON kept as readable text.

SQLAlchemy's JSON type writes ``\\u4e2d`` for a non-ASCII character, so a search for a tag
written in Chinese would never match it. This writes the characters themselves (and sorted
keys), so the job list's text search can look into the column with a plain LIKE.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator


class TagsText(TypeDecorator[dict[str, str]]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: dict[str, str] | None, dialect: Any) -> str | None:
        if not value:
            return None
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Any) -> dict[str, str] | None:
        if not value:
            return None
        loaded: dict[str, str] = json.loads(value)
        return loaded

"""Shapes of the scripts API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UploadForm(BaseModel):
    """The multipart form fields of an upload (documentation; the file comes as a part)."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(
        description="The script (.py) or project archive (.zip, .tar.gz).",
        json_schema_extra={"format": "binary", "type": "string"},
    )
    entrypoint: str | None = Field(
        default=None,
        description="For archives: the script to run "
        "(default train.py, at the top or in the archive's one top folder).",
    )


class ScriptOut(BaseModel):
    script: int = Field(description="The script's id.")
    filename: str
    kind: Literal["python", "zip", "tar.gz"]
    entrypoint: str
    has_requirements: bool
    size: int
    sha256: str
    owner: str
    created_at: datetime


class ScriptPage(BaseModel):
    total: int
    page: int
    size: int
    list: list[ScriptOut]

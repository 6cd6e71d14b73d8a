"""Request and response shapes of the accounts API (they also make its OpenAPI schemas)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, model_validator

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$"
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"
EMAIL_MAX_LENGTH = 254
PHONE_PATTERN = r"^\+?[0-9][0-9 ().-]{5,30}$"
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024
_EMAIL = re.compile(EMAIL_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
# A short list of passwords every guesser tries first.
_COMMON_PASSWORDS = frozenset(
    "password password1 password123 12345678 123456789 1234567890 qwerty123 qwertyuiop "
    "11111111 00000000 iloveyou abc12345 admin123 letmein1 welcome1 trainflow changeme "
    "passw0rd football baseball sunshine princess".split()
)


def _check_email(value: str | None) -> str | None:
    if value is not None and (len(value) > EMAIL_MAX_LENGTH or not _EMAIL.match(value)):
        raise ValueError("is not an email address")
    return value


def _check_phone(value: str | None) -> str | None:
    if value is not None and not _PHONE.match(value):
        raise ValueError("is not a phone number (digits, optionally starting with +)")
    return value


def check_password(value: str) -> str:
    if len(value) < PASSWORD_MIN_LENGTH:
        raise ValueError(f"is too weak: use at least {PASSWORD_MIN_LENGTH} characters")
    if len(value) > PASSWORD_MAX_LENGTH:
        raise ValueError(f"is too long: use at most {PASSWORD_MAX_LENGTH} characters")
    if value.lower() in _COMMON_PASSWORDS or len(set(value)) < 3:
        raise ValueError("is too weak: it is one of the first passwords an attacker tries")
    return value


Username = Annotated[
    str,
    Field(
        pattern=USERNAME_PATTERN,
        description="3-64 letters, digits, `_`, `.` or `-`; "
        "starts with a letter or digit; unique regardless of case.",
    ),
]
# The validators keep their own messages; json_schema_extra puts the same rules in the OpenAPI
# document (a test checks the two agree).
Password = Annotated[
    str,
    AfterValidator(check_password),
    Field(
        description=f"{PASSWORD_MIN_LENGTH}-{PASSWORD_MAX_LENGTH} characters, at least 3 different ones; "
        "not one of the most common passwords, and not containing the username.",
        json_schema_extra={"minLength": PASSWORD_MIN_LENGTH, "maxLength": PASSWORD_MAX_LENGTH},
    ),
]
Email = Annotated[
    Annotated[str, Field(json_schema_extra={"pattern": EMAIL_PATTERN, "maxLength": EMAIL_MAX_LENGTH})] | None,
    AfterValidator(_check_email),
    Field(description="An email address, or null."),
]
Phone = Annotated[
    Annotated[str, Field(json_schema_extra={"pattern": PHONE_PATTERN})] | None,
    AfterValidator(_check_phone),
    Field(
        description="Digits, optionally starting with `+`, with spaces, dots, dashes or brackets "
        "between (6-32 characters); or null."
    ),
]
RoleName = Literal["admin", "user"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _PasswordNotUsername(StrictModel):
    @model_validator(mode="after")
    def _password_differs(self) -> _PasswordNotUsername:
        username = getattr(self, "username", None)
        password = getattr(self, "password", None)
        if username and password and username.casefold() in password.casefold():
            raise ValueError("password must not contain the username")
        return self


class RegisterRequest(_PasswordNotUsername):
    username: Username
    password: Password
    email: Email = None
    phone: Phone = None


class CreateUserRequest(RegisterRequest):
    role: RoleName = "user"


class LoginRequest(StrictModel):
    username: str
    password: str


class RefreshRequest(StrictModel):
    refresh_token: str | None = Field(
        default=None, description="The refresh JWT; or send it as `Authorization: Bearer`."
    )


class LogoutRequest(StrictModel):
    refresh_token: str | None = Field(default=None, description="Also revoke this refresh JWT.")
    all: bool = Field(default=False, description="Revoke every token of this user.")


class ChangePasswordRequest(StrictModel):
    old_password: str
    new_password: Password


class ReplaceUserRequest(StrictModel):
    """Every editable field; PUT replaces them all, so each must be sent (null where allowed)."""

    username: Username
    email: Email
    phone: Phone
    role: RoleName


class PatchUserRequest(StrictModel):
    username: Username | None = None
    email: Email = None
    phone: Phone = None
    role: RoleName | None = None


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=1_000_000)
    size: int = Field(default=10, ge=1, le=100)


class PublicUser(BaseModel):
    id: int
    username: str


class UserOut(PublicUser):
    email: str | None
    phone: str | None
    role: RoleName
    created_at: datetime
    updated_at: datetime


class UserView(RootModel[UserOut | PublicUser]):
    """A user as the caller may see them: every field for themself and for admins, else id and username."""


class UserPage(BaseModel):
    total: int
    page: int
    size: int
    list: list[UserOut | PublicUser]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    user: UserOut


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme, not a secret
    expires_in: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    mlflow_version: str
    database: dict[str, str | float]

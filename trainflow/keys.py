"""The JWT signing key: from the settings, or generated once into the data directory."""

from __future__ import annotations

import os
import secrets
import stat

from trainflow.errors import ConfigError
from trainflow.settings import Settings

KEY_FILE = "secret_key"


def load_secret_key(settings: Settings) -> str:
    if settings.secret_key:
        if len(settings.secret_key) < 32:
            raise ConfigError("TRAINFLOW_SECRET_KEY must be at least 32 characters long.")
        return settings.secret_key
    path = settings.resolved_data_dir / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several server processes start at once, exactly one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        if not key:
            raise ConfigError(f"{path} is empty; delete it to generate a new key.") from None
        if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)  # nobody but the server's user may read it
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    return key

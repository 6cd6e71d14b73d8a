"""Tiny wheels and a file:// package index, built in a test: pip installs them without a network."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel holding one module ``name`` with ``source``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: trainflow-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def make_index(root: Path, wheels: list[Path]) -> str:
    """A PEP 503 index of ``wheels`` under ``root`` (file:// folders need index.html); its URL."""
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        projects.setdefault(wheel.name.split("-")[0].lower(), []).append(wheel)
    root.mkdir(parents=True, exist_ok=True)
    links = []
    for project, files in projects.items():
        (root / project).mkdir(exist_ok=True)
        anchors = []
        for wheel in files:
            target = root / project / wheel.name
            target.write_bytes(wheel.read_bytes())
            anchors.append(f'<a href="{wheel.name}">{wheel.name}</a>')
        (root / project / "index.html").write_text("<html><body>" + "".join(anchors) + "</body></html>")
        links.append(f'<a href="{project}/">{project}</a>')
    (root / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
    return root.resolve().as_uri()

"""What to tell the owner of a job that died of a missing import: how to declare the package.

The supervisor names the module (``missing_module`` in its final status, from the traceback's
last line: ``trainflow.runner.tracebacks``); this turns it into a sentence for the job's reason,
which the API, the command line and the job page show. A single-file script declares its
packages in its inline script metadata (PEP 723, ``trainflow.scripts.inline_metadata``), a
project archive in its ``requirements.txt``. Where a package installs under another import
name (``import sklearn`` comes from ``scikit-learn``), the package's name is the one to declare.
"""

from __future__ import annotations

import re

# Import names whose package on PyPI is called something else; any other is its own name.
PACKAGES = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "Crypto": "pycryptodome",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "pymupdf",
    "git": "GitPython",
    "jwt": "PyJWT",
    "Levenshtein": "levenshtein",
    "magic": "python-magic",
    "MySQLdb": "mysqlclient",
    "OpenSSL": "pyOpenSSL",
    "PIL": "pillow",
    "pptx": "python-pptx",
    "psycopg2": "psycopg2-binary",
    "pytorch_lightning": "pytorch-lightning",
    "serial": "pyserial",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "zmq": "pyzmq",
}
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,199}")


def package_of(module: str) -> str:
    """The PyPI package that provides ``module`` (by its top-level name)."""
    top = module.split(".", 1)[0]
    return PACKAGES.get(top, top)


def missing_module_hint(module: object, is_single_file: bool) -> str | None:
    """How to declare the package of a module a job could not import; None for a name that
    is not a module's (the status came from the job's supervisor, not from the server)."""
    if not isinstance(module, str) or not _MODULE.fullmatch(module):
        return None
    package = package_of(module)
    named = f"No module named '{module}'"
    if package != module.split(".", 1)[0]:
        named += f" (it comes from the package {package})"
    if is_single_file:
        return (
            f"{named}. If it is a package from PyPI, declare it in the script's inline metadata "
            f'(PEP 723), a comment block at its top:\n# /// script\n# dependencies = ["{package}"]\n# ///'
        )
    return (
        f"{named}. If it is a package from PyPI, add a line `{package}` to the project's "
        "requirements.txt, in the archive's top folder beside the entry point."
    )

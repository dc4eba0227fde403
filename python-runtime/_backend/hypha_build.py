"""A minimal PEP 517 build backend using only the standard library.

It builds a pure-Python wheel of the `hypha` package (distribution
`hyphad-worker`; and an sdist), so that
`pip install ./python-runtime` needs no network: the usual setuptools backend
would have to be downloaded into pip's isolated build environment, and PyPI is
not reachable from where hypha is deployed.
"""
import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "hypha"  # the import name
NAME = "hyphad-worker"  # the distribution name: `hypha` on PyPI is another project
DIST = NAME.replace("-", "_")  # as in wheel and dist-info names


def _version():
    """The one place the version is written: hypha/__init__.py."""
    with open(os.path.join(ROOT, PACKAGE, "__init__.py")) as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not m:
        raise RuntimeError("hypha/__init__.py has no __version__ line")
    return m.group(1)


VERSION = _version()
TAG = "py3-none-any"
DIST_INFO = f"{DIST}-{VERSION}.dist-info"

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: Python worker SDK for hypha: Mycelium TLV frames over stdin/stdout
Requires-Python: >=3.9
Classifier: Typing :: Typed
Classifier: Programming Language :: Python :: 3
"""
WHEEL = f"""Wheel-Version: 1.0
Generator: hypha_build
Root-Is-Purelib: true
Tag: {TAG}
"""


def _package_files():
    pkg = os.path.join(ROOT, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith((".py", ".typed")):
                full = os.path.join(dirpath, f)
                yield full, os.path.relpath(full, ROOT).replace(os.sep, "/")


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{DIST}-{VERSION}-{TAG}.whl"
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        def add(arcname, data):
            z.writestr(zipfile.ZipInfo(arcname, date_time=(2026, 1, 1, 0, 0, 0)), data)
            records.append(_record_line(arcname, data))
        for full, arcname in _package_files():
            with open(full, "rb") as f:
                add(arcname, f.read())
        add(f"{DIST_INFO}/METADATA", METADATA.encode())
        add(f"{DIST_INFO}/WHEEL", WHEEL.encode())
        records.append(f"{DIST_INFO}/RECORD,,")
        z.writestr(zipfile.ZipInfo(f"{DIST_INFO}/RECORD", date_time=(2026, 1, 1, 0, 0, 0)),
                   "\n".join(records) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    base = f"{DIST}-{VERSION}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ["pyproject.toml", "_backend/hypha_build.py"]:
            t.add(os.path.join(ROOT, rel), arcname=f"{base}/{rel}")
        for full, arcname in _package_files():
            t.add(full, arcname=f"{base}/{arcname}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = METADATA.encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name

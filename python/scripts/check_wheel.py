"""Check a built wheel the way an index and an installer see it (python/test.sh runs it).

    python scripts/check_wheel.py dist/sidekick_lb-...whl /path/to/auditwheel

- the file name carries the stable-ABI tags: ``cp39-abi3`` (one wheel for CPython 3.9 and later);
- the platform tag is a manylinux one, and ``auditwheel show`` agrees that the wheel satisfies it
  (the shared libraries it needs are only those a manylinux system provides, with symbol versions
  no newer than the tag allows);
- the archive holds the package: the compiled module, the pure-Python modules, the stubs and
  ``py.typed``.

Exits 1 with the reason on the first failed check.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List

REQUIRED = [
    "sidekick/__init__.py",
    "sidekick/_sidekick.pyi",
    "sidekick/py.typed",
    "sidekick/requests.py",
    "sidekick/httpx.py",
    "sidekick/boto3.py",
]


def fail(msg: str) -> None:
    print(f"check_wheel: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv: List[str]) -> None:
    if len(argv) != 3:
        fail("usage: check_wheel.py WHEEL AUDITWHEEL")
    wheel, auditwheel = Path(argv[1]), argv[2]
    # name-version-pythontag-abitag-platformtag.whl (no build tag in ours)
    parts = wheel.name[: -len(".whl")].split("-")
    if len(parts) != 5:
        fail(f"unexpected wheel file name {wheel.name}")
    _, _, py_tag, abi_tag, plat_tag = parts
    if (py_tag, abi_tag) != ("cp39", "abi3"):
        fail(f"{wheel.name}: tags {py_tag}-{abi_tag}, expected cp39-abi3 (pyo3 feature abi3-py39)")
    plats = plat_tag.split(".")
    if not all(p.startswith("manylinux") for p in plats):
        fail(f"{wheel.name}: platform tag {plat_tag} is not a manylinux one")

    out = subprocess.run([auditwheel, "show", str(wheel)], capture_output=True, text=True, check=False)
    text = " ".join((out.stdout + out.stderr).split())
    print(text)
    if out.returncode != 0:
        fail(f"auditwheel show exited {out.returncode}")
    found = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    if not found:
        fail("auditwheel show named no platform tag")
    audited = found.group(1)
    if audited not in plats:
        fail(f"auditwheel says the wheel satisfies {audited}; its name claims {plat_tag}")

    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        fail(f"{wheel.name} lacks {', '.join(missing)}")
    if not any(re.fullmatch(r"sidekick/_sidekick\.abi3\.so", n) for n in names):
        fail(f"{wheel.name} has no sidekick/_sidekick.abi3.so: {names}")
    print(f"ok: {wheel.name}: cp39-abi3, {audited} (auditwheel agrees), {len(names)} files")


if __name__ == "__main__":
    main(sys.argv)

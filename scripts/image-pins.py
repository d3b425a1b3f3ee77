"""What the image's wheelhouse holds (scripts/build-image.sh): opsbook's runtime dependencies, pinned to
the versions of the venv this runs in (the ones the tests ran with), for the image's Python.

    .venv/bin/python scripts/image-pins.py PYTHON_VERSION REQUIREMENTS_OUT CONSTRAINTS_OUT

Pinned, pip resolves at once; unpinned, mlflow's web stack made it backtrack through dozens of
versions. A pin whose Requires-Python excludes the image's Python (Debian 12's python3 is 3.11.2, a
venv's may be a later 3.11) is left out, so pip picks that package's newest version that fits.
Packages installed from a path or URL (opsbook itself, editable) and pip's own tools are not pinned.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

UNPINNED = {"opsbook", "pip", "setuptools", "wheel"}


def pins(python_version: str) -> tuple[list[str], list[str]]:
    pins: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if not name or name in seen or name in UNPINNED or dist.read_text("direct_url.json") is not None:
            continue
        seen.add(name)
        try:
            fits = SpecifierSet(dist.metadata["Requires-Python"] or "").contains(python_version, prereleases=True)
        except InvalidSpecifier:
            fits = True
        (pins if fits else dropped).append(f"{name}=={dist.version}")
    return sorted(pins), sorted(dropped)


def main(python_version: str, requirements_out: str, constraints_out: str) -> None:
    with open("pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    with open(requirements_out, "w") as f:
        f.write("\n".join(deps) + "\n")
    kept, dropped = pins(python_version)
    with open(constraints_out, "w") as f:
        f.write("".join(f"{p}\n" for p in kept))
        f.write("".join(f"# not pinned, needs a newer Python than {python_version}: {p}\n" for p in dropped))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: image-pins.py PYTHON_VERSION REQUIREMENTS_OUT CONSTRAINTS_OUT")
    main(*sys.argv[1:])

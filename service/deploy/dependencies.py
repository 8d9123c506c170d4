"""Print the requirements of statecast and of the given extras, one per line, read from
``pyproject.toml``: the image installs them in a layer of their own, before the sources are
copied, so that a change to the sources does not download and install them again.

    python dependencies.py pyproject.toml [EXTRA ...]
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    """The project's dependencies and those of ``extras``, in order, without repeats."""
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return list(dict.fromkeys(wanted))


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))

"""Print how an environment's packages differ from requirements.lock: what `make
test-latest` runs against that `make test` does not. Usage: python tools/lockdiff.py LOCK"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    """Package -> version of every ``name==version`` line of a pip-compile lock."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.MULTILINE)
    return {_key(name): version for name, version in pins}


#: What every environment has beside the project's dependencies.
TOOLING = {"pip", "setuptools", "wheel", "se-search"}


def main(lock: str) -> int:
    pins = locked(Path(lock))
    here = {_key(d.metadata["Name"]): d.version for d in metadata.distributions()}
    here = {name: version for name, version in here.items() if name not in TOOLING}
    changed = [
        f"  {name}: {pins[name]} (lock) -> {here[name]}"
        for name in sorted(pins.keys() & here.keys())
        if pins[name] != here[name]
    ]
    added = [
        f"  {name}: {here[name]} (not in the lock)" for name in sorted(here.keys() - pins.keys())
    ]
    print(f"against {lock}: {len(changed)} packages at another version, {len(added)} not locked")
    print("\n".join(changed + added))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))

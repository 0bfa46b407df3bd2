"""python -m devstack install: install the Debian packages the stack needs."""
import sys

from devstack.install import ensure_packages, missing_packages


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        ensure_packages()
        print("stack packages present:", "postgresql, redis-server")
        return 0
    if argv[:1] == ["check"]:
        missing = missing_packages()
        print("missing:", ", ".join(missing) if missing else "nothing")
        return 1 if missing else 0
    print("usage: python -m devstack install|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""python -m devstack install|check|chat|demo: stack packages, a console to talk to the bot by hand, the DR drill."""
import sys

from devstack.install import ensure_packages, missing_packages


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        ensure_packages()
        print("stack packages present:", "postgresql, redis-server, systemd-analyze")
        return 0
    if argv[:1] == ["chat"]:
        from devstack import console
        return console.main()
    if argv[:1] == ["demo"]:
        from devstack import drill
        return drill.main(argv[1:])
    if argv[:1] == ["check"]:
        missing = missing_packages()
        print("missing:", ", ".join(missing) if missing else "nothing")
        return 1 if missing else 0
    print("usage: python -m devstack install|check|chat|demo [--keep]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Install missing Debian packages for the stack, never upgrading what is already there."""
import glob
import os
import shutil
import subprocess
import sys

APT_INSTALL = ["apt-get", "install", "-y", "--no-install-recommends", "--no-upgrade"]


def postgres_bindir() -> str | None:
    """The newest /usr/lib/postgresql/<major>/bin that has initdb and postgres."""
    candidates = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
                  if os.path.exists(f"{d}/initdb") and os.path.exists(f"{d}/postgres")]
    return max(candidates, key=lambda d: int(d.split("/")[-2]), default=None)


def missing_packages() -> list[str]:
    missing = []
    if postgres_bindir() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if shutil.which("systemd-analyze") is None:
        missing.append("systemd")  # the unit files in deploy/ are checked with `systemd-analyze verify`
    return missing


def ensure_packages() -> None:
    """apt-get install what is missing (needs root); refreshes package lists only if needed."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(missing)}: install them (apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(APT_INSTALL + missing, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(APT_INSTALL + missing, env=env, check=True)
    still = missing_packages()
    if still:
        sys.exit(f"could not install {', '.join(still)}")

"""The systemd units in deploy/: valid for systemd, and shaped the way the runbook relies on."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL_DIR = "/opt/depositbot"
UNITS = ("bot", "worker")


def render(name: str, install_dir: Path, python: str) -> str:
    """The unit file as it would be installed at `install_dir`, run by root (a user every machine has)."""
    text = (ROOT / "deploy" / name).read_text()
    text = text.replace(f"{INSTALL_DIR}/.venv/bin/python", python).replace(INSTALL_DIR, str(install_dir))
    return re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.M)


def directives(text: str) -> dict[str, list[str]]:
    found = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("unit", UNITS + ("status-check",))
def test_the_unit_passes_systemd_analyze_verify(unit, tmp_path):
    assert shutil.which("systemd-analyze"), "make test installs systemd (python -m devstack install)"
    install_dir = tmp_path / "depositbot"
    (install_dir / "state").mkdir(parents=True)
    for program in ("bot.py", "worker.py", "dr.py"):
        (install_dir / program).write_text("")
    paths = [tmp_path / f"{unit}.service"]
    paths[0].write_text(render(f"{unit}.service", install_dir, sys.executable))
    if (ROOT / "deploy" / f"{unit}.timer").exists():
        paths.append(tmp_path / f"{unit}.timer")
        paths[1].write_text(render(f"{unit}.timer", install_dir, sys.executable))
    done = subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: an unknown directive and a missing program are both reported."""
    broken = render("bot.service", tmp_path, "/nonexistent/python").replace("NoNewPrivileges=", "NoNewPrivilege=")
    path = tmp_path / "bot.service"
    path.write_text(broken)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert "NoNewPrivilege" in done.stderr and "not executable" in done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_reads_env_itself_restarts_on_failure_and_is_hardened(unit):
    found = directives((ROOT / "deploy" / f"{unit}.service").read_text())
    assert "EnvironmentFile" not in found and "Environment" not in found  # .env edits must win
    assert found["WorkingDirectory"] == [INSTALL_DIR]
    assert found["ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/python {INSTALL_DIR}/{unit}.py"]
    assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # the programs re-read .env on SIGHUP
    assert found["Restart"] == ["on-failure"] and found["RestartPreventExitStatus"] == ["2"]
    assert found["NoNewPrivileges"] == ["yes"] and found["ProtectSystem"] == ["strict"]
    assert found["PrivateTmp"] == ["yes"] and found["ReadWritePaths"] == [f"{INSTALL_DIR}/state"]
    assert found["StandardOutput"] == ["journal"] and found["StandardError"] == ["journal"]


def test_the_status_check_runs_dr_py_status_every_minute():
    service = directives((ROOT / "deploy" / "status-check.service").read_text())
    timer = directives((ROOT / "deploy" / "status-check.timer").read_text())
    assert service["ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/python {INSTALL_DIR}/dr.py status"]
    assert service["Type"] == ["oneshot"] and timer["OnUnitActiveSec"] == ["1min"]

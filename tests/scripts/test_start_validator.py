import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripts import load_script

start_validator = load_script("start_validator")

# A stand-in validator: healthy releases touch the heartbeat, broken ones exit at once.
APP = """
import sys, time, pathlib
if pathlib.Path("release.txt").read_text().strip() == "broken":
    sys.exit(1)
beat = pathlib.Path(sys.argv[1])
while True:
    beat.touch()
    time.sleep(0.2)
"""


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _commit(work: Path, release: str) -> str:
    (work / "release.txt").write_text(release + "\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", release)
    _git(work, "push", "-q", "origin", "HEAD:main")
    return _git(work, "rev-parse", "HEAD")


@pytest.fixture
def deployment(tmp_path):
    upstream = tmp_path / "upstream.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(upstream))
    work = tmp_path / "work"
    _git(tmp_path, "clone", "-q", str(upstream), str(work))
    for cwd in (work,):
        _git(cwd, "config", "user.email", "t@example.com")
        _git(cwd, "config", "user.name", "t")
    (work / "app.py").write_text(APP)
    first = _commit(work, "v1")
    deployed = tmp_path / "deployed"
    _git(tmp_path, "clone", "-q", str(upstream), str(deployed))
    heartbeat = tmp_path / "heartbeat"
    options = start_validator.Options(
        repo=deployed, remote="origin", branch="main",
        command=[sys.executable, "app.py", str(heartbeat)], heartbeat=heartbeat,
        update_interval_s=1, health_timeout_s=8, heartbeat_max_age_s=5, python=sys.executable,
        reinstall=False, supervisor="own", max_cycles=None,
    )
    supervisor = start_validator.OwnSupervisor(options)
    supervisor.start()
    yield work, deployed, options, supervisor, first
    supervisor.stop()


def test_no_change_is_current(deployment):
    _, _, options, supervisor, _ = deployment
    assert start_validator.update_once(supervisor, options) == "current"


def test_update_then_rollback(deployment):
    work, deployed, options, supervisor, _ = deployment
    good = _commit(work, "v2")
    assert start_validator.update_once(supervisor, options) == "updated"
    assert _git(deployed, "rev-parse", "HEAD") == good
    assert supervisor.alive()

    _commit(work, "broken")
    assert start_validator.update_once(supervisor, options) == "rolled_back"
    assert _git(deployed, "rev-parse", "HEAD") == good
    time.sleep(0.5)
    assert supervisor.alive()
    assert start_validator.heartbeat_fresh(options.heartbeat, 5, time.time() - 5)


def test_release_that_fails_to_install_is_rolled_back(deployment, monkeypatch):
    work, deployed, options, supervisor, first = deployment
    options.reinstall = True

    def reinstall(repo, python):
        if (repo / "release.txt").read_text().strip() == "uninstallable":
            raise subprocess.CalledProcessError(1, ["pip", "install"], stderr="no matching distribution")

    monkeypatch.setattr(start_validator, "reinstall", reinstall)
    _commit(work, "uninstallable")
    assert start_validator.update_once(supervisor, options) == "rolled_back"
    assert _git(deployed, "rev-parse", "HEAD") == first
    time.sleep(0.5)
    assert supervisor.alive()


CHILD = """
import os, pathlib, sys, time
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
while True:
    time.sleep(0.2)
"""


def test_sigterm_to_the_supervisor_stops_the_validator(tmp_path):
    import os
    import signal

    (tmp_path / "child.py").write_text(CHILD)
    pid_file = tmp_path / "child.pid"
    script = Path(__file__).resolve().parents[2] / "scripts" / "start_validator.py"
    supervisor = subprocess.Popen(
        [sys.executable, str(script), "--supervisor", "own", "--update-interval-s", "3600",
         "--command", sys.executable, str(tmp_path / "child.py"), str(pid_file)],
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the validator outlived its supervisor")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()

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


def test_backoff_doubles_up_to_its_cap_and_resets_after_a_healthy_run():
    backoff = start_validator.Backoff(first_s=5, max_s=60, healthy_s=600)
    assert [backoff.delay(ran_s=1) for _ in range(6)] == [5, 10, 20, 40, 60, 60]
    assert backoff.delay(ran_s=600) == 5  # a healthy run ends the row of crashes
    assert backoff.delay(ran_s=2) == 10


def _options(tmp_path, command, **changes):
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(0.2 if seconds <= 1 else 0)  # the loop's own tick: let the child exit; no real back-off

    fields = dict(
        repo=tmp_path, remote="origin", branch="main", command=command, heartbeat=tmp_path / "beat",
        update_interval_s=3600, health_timeout_s=5, heartbeat_max_age_s=5, python=sys.executable,
        reinstall=False, supervisor="own", max_cycles=40, sleep=sleep,
        backoff=start_validator.Backoff(first_s=5, max_s=30, healthy_s=600),
    )
    options = start_validator.Options(**{**fields, **changes})
    return options, sleeps


BAD_SETTING = """
import sys
print("loading settings", file=sys.stderr)
print("error: --batch-tokens: must be at least 1 (got -1)", file=sys.stderr)
sys.exit(2)
"""


def test_a_validator_that_exits_2_is_not_restarted(tmp_path, caplog):
    (tmp_path / "bad.py").write_text(BAD_SETTING)
    options, sleeps = _options(tmp_path, [sys.executable, str(tmp_path / "bad.py")])
    with caplog.at_level("INFO", logger="start_validator"):
        assert start_validator.run(options) == 2
    assert [s for s in sleeps if s > 1] == []  # no restart was even scheduled
    assert sum("starting:" in r.getMessage() for r in caplog.records) == 1
    [stopped] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "not restarting" in stopped
    assert stopped.endswith("error: --batch-tokens: must be at least 1 (got -1)")


def test_crashes_are_restarted_with_growing_delays(tmp_path, caplog):
    options, sleeps = _options(tmp_path, [sys.executable, "-S", "-c", "import sys; sys.exit(1)"], max_cycles=14)
    with caplog.at_level("INFO", logger="start_validator"):
        assert start_validator.run(options) == 0
    delays = [s for s in sleeps if s > 1]
    assert len(delays) >= 4
    assert delays[:5] == [5, 10, 20, 30, 30][: len(delays[:5])]
    assert any("exited with code 1" in r.getMessage() for r in caplog.records)


def test_help_shows_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        start_validator.parse(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # unwrap
    for flag, default in [("--remote", "origin"), ("--branch", "main"), ("--update-interval-s", "900"),
                          ("--health-timeout-s", "600"), ("--heartbeat", "~/.finetune/validator/heartbeat"),
                          ("--heartbeat-max-age-s", "600"), ("--restart-delay-s", "5"),
                          ("--restart-delay-max-s", "300"), ("--healthy-after-s", "600"), ("--supervisor", "auto")]:
        help_of_flag = out.split(f" {flag} ")[-1].split(" --")[0]  # its usage metavar, help and default
        assert help_of_flag.endswith(f"(default: {default})"), flag
    assert "--no-reinstall skip pip install" in out


def test_a_bad_supervisor_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        start_validator.parse(["--restart-delay-s", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: --restart-delay-s: must be greater than 0 (got 0)\n"

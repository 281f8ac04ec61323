#!/usr/bin/env python3
"""Run the validator under a supervisor that keeps it up to date.

Every --update-interval-s it fetches the git remote; when the branch has moved it pulls,
reinstalls, restarts the validator and checks its health (process alive, heartbeat file
fresh). If the new release is unhealthy within --health-timeout-s, it rolls back to the
previous commit, reinstalls and restarts that. It uses pm2 where installed (--supervisor pm2),
else its own loop.

Either way a validator that exits 2 (a bad setting) is not restarted: the supervisor prints
the validator's last error line and exits 2 itself. After a crash it waits before restarting:
--restart-delay-s, doubled after each crash in a row up to --restart-delay-max-s, and back to
the start once a run lasted --healthy-after-s.

    python scripts/start_validator.py -- --wallet.name vali --wallet.hotkey default --netuid 37
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("start_validator")
REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def remote_head(repo: Path, remote: str, branch: str) -> str:
    git(repo, "fetch", "--quiet", remote, branch)
    return git(repo, "rev-parse", "FETCH_HEAD")


def reinstall(repo: Path, python: str) -> None:
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", str(repo)], cwd=repo, check=True)


CONFIG_ERROR = 2  # the validator's exit code for a bad setting: restarting cannot fix it


@dataclass
class Backoff:
    """Restart delays after crashes: `first_s`, doubled per crash in a row, at most `max_s`;
    a run that lasted `healthy_s` or more ends the row."""

    first_s: float = 5.0
    max_s: float = 300.0
    healthy_s: float = 600.0
    crashes: int = 0

    def delay(self, ran_s: float) -> float:
        """The wait before the next start, after a run of `ran_s` seconds ended."""
        if ran_s >= self.healthy_s:
            self.crashes = 0
        self.crashes += 1
        return min(self.max_s, self.first_s * 2 ** (self.crashes - 1))


@dataclass
class Options:
    repo: Path
    remote: str
    branch: str
    command: list[str]
    heartbeat: Path
    update_interval_s: float
    health_timeout_s: float
    heartbeat_max_age_s: float
    python: str
    reinstall: bool
    supervisor: str  # "own" | "pm2"
    max_cycles: int | None  # for tests: stop after this many supervisor loop iterations
    backoff: Backoff = field(default_factory=Backoff)
    sleep: Callable[[float], None] = time.sleep  # tests: a fake that records the delays


class OwnSupervisor:
    """Starts the validator as a child process; remembers its last error line and run time.

    The child's stderr passes through to ours, line by line, so that the last ``error:`` line
    (or else the last line) can be shown when it exits.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.last_error = ""
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.stop()
        logger.info("starting: %s", " ".join(self.options.command))
        self.last_error = ""
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.options.command, cwd=self.options.repo, stderr=subprocess.PIPE,
                                        text=True, errors="replace", bufsize=1)
        self._reader = threading.Thread(target=self._pass_stderr, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _pass_stderr(self, stream) -> None:
        last_line = ""
        for line in stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            text = line.strip()
            if text.startswith("error:"):
                self.last_error = text
            elif text:
                last_line = text
        if not self.last_error:
            self.last_error = last_line

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self) -> tuple[int, float] | None:
        """``(exit code, seconds it ran)`` once the validator has exited, else None."""
        if self.process is None or self.process.poll() is None:
            return None
        if self._reader is not None:
            self._reader.join(timeout=5)  # its last lines, unless a stray grandchild holds the pipe
        return self.process.returncode, time.monotonic() - self.started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Pm2Supervisor:
    """Delegates process keeping to pm2 (which restarts on exit by itself)."""

    NAME = "finetune-validator"

    def __init__(self, options: Options) -> None:
        self.options = options

    def start(self) -> None:
        subprocess.run(["pm2", "delete", self.NAME], capture_output=True)
        script, *args = self.options.command[1:]
        # pm2 restarts on exit by itself: not after a bad setting, and with a growing delay.
        delay_ms = str(int(self.options.backoff.first_s * 1000))
        subprocess.run(["pm2", "start", script, "--name", self.NAME, "--interpreter", self.options.command[0],
                        "--stop-exit-codes", str(CONFIG_ERROR), "--exp-backoff-restart-delay", delay_ms,
                        "--", *args], check=True, cwd=self.options.repo)

    def alive(self) -> bool:
        out = subprocess.run(["pm2", "pid", self.NAME], capture_output=True, text=True).stdout.strip()
        return out.isdigit() and int(out) > 0

    def stop(self) -> None:
        subprocess.run(["pm2", "delete", self.NAME], capture_output=True)


def heartbeat_fresh(path: Path, max_age_s: float, since: float) -> bool:
    """The heartbeat was touched after `since` and within the last `max_age_s` seconds."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return mtime >= since and time.time() - mtime <= max_age_s


def wait_healthy(supervisor, options: Options, started: float) -> bool:
    """True once the validator is alive with a fresh heartbeat; False if the timeout passes."""
    deadline = time.monotonic() + options.health_timeout_s
    while time.monotonic() < deadline:
        if not supervisor.alive():
            return False
        if heartbeat_fresh(options.heartbeat, options.heartbeat_max_age_s, started):
            return True
        time.sleep(min(1.0, options.health_timeout_s / 10))
    return False


def deploy(supervisor, options: Options, target: str) -> bool:
    """Check out `target`, reinstall, restart; True if healthy."""
    git(options.repo, "reset", "--quiet", "--hard", target)
    if options.reinstall:
        reinstall(options.repo, options.python)
    started = time.time()
    supervisor.start()
    return wait_healthy(supervisor, options, started)


def update_once(supervisor, options: Options) -> str:
    """One update check. Returns what happened: 'current', 'updated' or 'rolled_back'."""
    current = git(options.repo, "rev-parse", "HEAD")
    try:
        latest = remote_head(options.repo, options.remote, options.branch)
    except subprocess.CalledProcessError as exc:
        logger.warning("cannot reach %s: %s", options.remote, exc.stderr.strip() if exc.stderr else exc)
        return "current"
    if latest == current:
        return "current"
    logger.info("new release %s (running %s): updating", latest[:8], current[:8])
    try:
        healthy = deploy(supervisor, options, latest)
    except (subprocess.CalledProcessError, OSError) as exc:  # e.g. pip cannot install it
        logger.error("release %s failed to deploy: %s", latest[:8], exc)
        healthy = False
    if healthy:
        logger.info("release %s healthy", latest[:8])
        return "updated"
    logger.error("release %s unhealthy: rolling back to %s", latest[:8], current[:8])
    deploy(supervisor, options, current)
    return "rolled_back"


def restart_after_exit(supervisor: OwnSupervisor, options: Options) -> int | None:
    """Restart an exited validator after its back-off delay; None if it is still running.

    Returns:
        None when it runs (still, or again); `CONFIG_ERROR` when it exited with a bad setting,
        which a restart cannot fix (its last error line is logged).
    """
    exited = supervisor.exited()
    if exited is None:
        return None
    code, ran_s = exited
    if code == CONFIG_ERROR:
        logger.error("the validator exited %d, a bad setting; not restarting it. Its last error: %s",
                     code, supervisor.last_error or "(none printed)")
        return CONFIG_ERROR
    delay = options.backoff.delay(ran_s)
    logger.warning("validator exited with code %s after %.0fs; restarting in %.0fs", code, ran_s, delay)
    options.sleep(delay)
    supervisor.start()
    return None


def run(options: Options) -> int:
    """Supervise until stopped. Returns the exit code: 0, or 2 when the validator exited 2."""
    supervisor = Pm2Supervisor(options) if options.supervisor == "pm2" else OwnSupervisor(options)
    supervisor.start()
    last_check = time.monotonic()
    cycles = 0
    reported = False
    try:
        while options.max_cycles is None or cycles < options.max_cycles:
            cycles += 1
            options.sleep(min(1.0, options.update_interval_s))
            if options.supervisor == "own" and restart_after_exit(supervisor, options) == CONFIG_ERROR:
                return CONFIG_ERROR
            if options.supervisor == "pm2" and not supervisor.alive() and not reported:
                reported = True  # pm2 restarts it unless it exited 2 (a bad setting)
                logger.warning("pm2 has no running validator; `pm2 logs %s` shows why", Pm2Supervisor.NAME)
            if time.monotonic() - last_check >= options.update_interval_s:
                last_check = time.monotonic()
                update_once(supervisor, options)
    except KeyboardInterrupt:
        pass
    finally:
        if options.supervisor == "own":
            supervisor.stop()
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage dump
        self.exit(2, f"error: {message}\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default. (This script imports nothing of finetune: it must keep
    running while a release it installs is broken.)"""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.default is not None and action.default is not False
                and action.default is not argparse.SUPPRESS and "default" not in text):
            text += " (default: %(default)s)"
        return text


def parse(argv: list[str] | None) -> Options:
    parser = _Parser(description=__doc__, formatter_class=_Help, allow_abbrev=False)
    parser.add_argument("--remote", default="origin", metavar="NAME", help="git remote to follow")
    parser.add_argument("--branch", default="main", metavar="NAME", help="branch to follow")
    parser.add_argument("--update-interval-s", type=float, default=15 * 60, metavar="SECONDS",
                        help="how often the remote is checked for a new release")
    parser.add_argument("--health-timeout-s", type=float, default=10 * 60, metavar="SECONDS",
                        help="time a new release has to become healthy before it is rolled back")
    parser.add_argument("--heartbeat", type=Path, default=Path("~/.finetune/validator/heartbeat"), metavar="PATH",
                        help="the file the validator touches after every loop step (passed to it)")
    parser.add_argument("--heartbeat-max-age-s", type=float, default=10 * 60, metavar="SECONDS",
                        help="a heartbeat older than this means the validator is unhealthy")
    parser.add_argument("--restart-delay-s", type=float, default=5, metavar="SECONDS",
                        help="wait before restarting a crashed validator; doubled per crash in a row")
    parser.add_argument("--restart-delay-max-s", type=float, default=300, metavar="SECONDS",
                        help="the longest wait between restarts")
    parser.add_argument("--healthy-after-s", type=float, default=600, metavar="SECONDS",
                        help="a run this long resets the restart delay")
    parser.add_argument("--supervisor", choices=["auto", "pm2", "own"], default="auto",
                        help="who restarts the validator: pm2, this script's own loop, or auto (pm2 if installed)")
    parser.add_argument("--no-reinstall", action="store_true", help="skip pip install after a pull")
    parser.add_argument("--command", nargs="+", help=argparse.SUPPRESS)  # tests: run this instead
    parser.add_argument("--max-cycles", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("validator_args", nargs=argparse.REMAINDER, metavar="-- VALIDATOR_FLAGS",
                        help="flags after -- go to neurons/validator.py")
    args = parser.parse_args(argv)
    for name in ("update_interval_s", "health_timeout_s", "heartbeat_max_age_s", "restart_delay_s",
                 "restart_delay_max_s"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')}: must be greater than 0 (got {getattr(args, name):g})")
    heartbeat = args.heartbeat.expanduser()
    validator_args = [a for a in args.validator_args if a != "--"]
    command = args.command or [sys.executable, str(REPO / "neurons" / "validator.py"),
                               "--heartbeat-path", str(heartbeat), *validator_args]
    supervisor = args.supervisor
    if supervisor == "auto":
        supervisor = "pm2" if shutil.which("pm2") else "own"
    return Options(
        repo=REPO if not args.command else Path.cwd(), remote=args.remote, branch=args.branch,
        command=command, heartbeat=heartbeat, update_interval_s=args.update_interval_s,
        health_timeout_s=args.health_timeout_s, heartbeat_max_age_s=args.heartbeat_max_age_s,
        python=sys.executable, reinstall=not args.no_reinstall, supervisor=supervisor,
        max_cycles=args.max_cycles,
        backoff=Backoff(first_s=args.restart_delay_s, max_s=args.restart_delay_max_s,
                        healthy_s=args.healthy_after_s),
    )


def _exit_on_sigterm(signum, _frame) -> None:
    # Unwinds `run`, whose `finally` stops the validator: it must not outlive its supervisor,
    # or a restarted supervisor would run a second validator on the same state file.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return run(parse(argv))


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Run the validator under a supervisor that keeps it up to date.

Every `--update-interval-s` it fetches the git remote; when the branch has moved it pulls,
reinstalls, restarts the validator, and checks its health (process alive and heartbeat file
fresh). If the new release is unhealthy within `--health-timeout-s`, it rolls back to the
previous commit, reinstalls and restarts that. Uses pm2 where installed (`--supervisor pm2`),
else its own loop, which also restarts a validator that exits.

    python scripts/start_validator.py -- --wallet.name vali --wallet.hotkey default --netuid 37
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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


class OwnSupervisor:
    """Starts the validator as a child process and restarts it when it exits."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.stop()
        logger.info("starting: %s", " ".join(self.options.command))
        self.process = subprocess.Popen(self.options.command, cwd=self.options.repo)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
        subprocess.run(["pm2", "start", script, "--name", self.NAME, "--interpreter",
                        self.options.command[0], "--", *args], check=True, cwd=self.options.repo)

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


def run(options: Options) -> int:
    supervisor = Pm2Supervisor(options) if options.supervisor == "pm2" else OwnSupervisor(options)
    supervisor.start()
    last_check = time.monotonic()
    cycles = 0
    try:
        while options.max_cycles is None or cycles < options.max_cycles:
            cycles += 1
            time.sleep(min(1.0, options.update_interval_s))
            if options.supervisor == "own" and not supervisor.alive():
                logger.warning("validator exited; restarting")
                supervisor.start()
            if time.monotonic() - last_check >= options.update_interval_s:
                last_check = time.monotonic()
                update_once(supervisor, options)
    except KeyboardInterrupt:
        pass
    finally:
        if options.supervisor == "own":
            supervisor.stop()
    return 0


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remote", default="origin", help="git remote to follow")
    parser.add_argument("--branch", default="main", help="branch to follow")
    parser.add_argument("--update-interval-s", type=float, default=15 * 60)
    parser.add_argument("--health-timeout-s", type=float, default=10 * 60,
                        help="time a new release has to become healthy")
    parser.add_argument("--heartbeat", type=Path, default=Path("~/.finetune/validator/heartbeat").expanduser())
    parser.add_argument("--heartbeat-max-age-s", type=float, default=10 * 60)
    parser.add_argument("--supervisor", choices=["auto", "pm2", "own"], default="auto")
    parser.add_argument("--no-reinstall", action="store_true", help="skip pip install after a pull")
    parser.add_argument("--command", nargs="+", help=argparse.SUPPRESS)  # tests: run this instead
    parser.add_argument("--max-cycles", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("validator_args", nargs=argparse.REMAINDER, help="arguments after -- go to the validator")
    args = parser.parse_args(argv)
    validator_args = [a for a in args.validator_args if a != "--"]
    command = args.command or [sys.executable, str(REPO / "neurons" / "validator.py"),
                               "--heartbeat-path", str(args.heartbeat), *validator_args]
    supervisor = args.supervisor
    if supervisor == "auto":
        supervisor = "pm2" if shutil.which("pm2") else "own"
    return Options(
        repo=REPO if not args.command else Path.cwd(), remote=args.remote, branch=args.branch,
        command=command, heartbeat=args.heartbeat, update_interval_s=args.update_interval_s,
        health_timeout_s=args.health_timeout_s, heartbeat_max_age_s=args.heartbeat_max_age_s,
        python=sys.executable, reinstall=not args.no_reinstall, supervisor=supervisor,
        max_cycles=args.max_cycles,
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

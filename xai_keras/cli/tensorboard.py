"""`xai-keras tensorboard`: start TensorBoard on localhost."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from xai_keras.cli._common import count

# TensorBoard runs in a child process: this command need not load TensorFlow.
USES_TENSORFLOW = False

# Signals passed on to the TensorBoard child, so stopping this command stops the server too
# (none is left holding the port).
_FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tensorboard",
        help="start TensorBoard on localhost",
        description="Run TensorBoard on this machine only (bound to localhost: other machines "
        "cannot reach it; forward the port over SSH to view it remotely). Ctrl-C or SIGTERM "
        "stops it and its server.",
    )
    p.add_argument(
        "--logdir",
        default="logs",
        help="the folder of TensorBoard event files, searched recursively (default: logs; "
        "`train --out runs/shapes` writes runs/shapes/tb)",
    )
    p.add_argument(
        "--port",
        type=count(1, 65535),
        default=6006,
        help="the port on localhost to serve (default: 6006)",
    )
    p.set_defaults(func=run)


def _command(log_dir: str | os.PathLike, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(log_dir),
        "--host",
        "localhost",
        "--port",
        str(port),
    ]


def _pass_on_stderr(stream) -> None:
    """Copy the child's stderr to ours, without TensorFlow's start-up log lines."""
    from xai_keras.cli._quiet import is_log_line

    for line in stream:
        if not is_log_line(line):
            sys.stderr.write(line)
            sys.stderr.flush()


def launch(log_dir: str | os.PathLike, port: int = 6006, quiet_logs: bool = True) -> int:
    """Run TensorBoard on localhost only until it exits or this process is told to stop
    (SIGINT, SIGTERM, SIGHUP), which is passed on to it: no orphan keeps serving the port.
    TensorFlow's start-up log lines in its output are dropped unless `quiet_logs` is False.
    Returns TensorBoard's exit code, 0 when it was stopped by a signal."""
    import threading

    print(f"TensorBoard on http://localhost:{port}/ (Ctrl-C to stop)", flush=True)
    environ = dict(os.environ)
    if quiet_logs:
        environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started: list[subprocess.Popen] = []
    stopped: list[int] = []

    def forward(signum, frame) -> None:
        stopped.append(signum)
        if started and started[0].poll() is None:
            started[0].send_signal(signum)

    # Handlers first, then the child: a signal that comes as the child starts is never lost
    # (nor turned into an exception that would leave the child behind).
    previous = {}
    for sig in _FORWARDED:
        with contextlib.suppress(ValueError, OSError):  # not the main thread: no handlers
            previous[sig] = signal.signal(sig, forward)
    try:
        child = subprocess.Popen(
            _command(log_dir, port),
            env=environ,
            stderr=subprocess.PIPE if quiet_logs else None,
            text=True,
            errors="replace",
        )
        started.append(child)
        if stopped:  # told to stop while the child was being started
            child.send_signal(stopped[0])
        if quiet_logs:
            threading.Thread(target=_pass_on_stderr, args=(child.stderr,), daemon=True).start()
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:  # no handler installed (not the main thread)
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in started:
            if child.poll() is None:  # an exception in this process: do not leave it behind
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
    return 0 if stopped else code


def run(args: argparse.Namespace) -> int:
    from xai_keras.errors import InputError

    if not Path(args.logdir).is_dir():
        raise InputError(
            f"--logdir {args.logdir}: no such folder. Pass the folder a run logged to, e.g. "
            "--logdir runs/shapes/tb (`train --out runs/shapes` writes it)."
        )
    return launch(args.logdir, args.port, quiet_logs=not args.debug)

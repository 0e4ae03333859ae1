"""`xai-keras tensorboard`: start TensorBoard on localhost."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# TensorBoard runs in a child process: this command need not load TensorFlow.
USES_TENSORFLOW = False


def add_parser(sub) -> None:
    p = sub.add_parser("tensorboard", help="start TensorBoard on localhost")
    p.add_argument("--logdir", default="logs")
    p.add_argument("--port", type=int, default=6006)
    p.set_defaults(func=run)


def launch(log_dir: str | os.PathLike, port: int = 6006) -> int:
    """Run TensorBoard on localhost only, until interrupted."""
    print(f"TensorBoard on http://localhost:{port}/ (Ctrl-C to stop)", flush=True)
    cmd = [
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
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def run(args: argparse.Namespace) -> int:
    return launch(args.logdir, args.port)

"""Train from a config: the same as `xai-keras train` (see `--help`)."""

import sys

from xai_keras.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

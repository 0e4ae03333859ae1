"""`python -m xai_keras.cli ...`, the same as `xai-keras ...`."""

import sys

from xai_keras.cli import main

sys.exit(main())

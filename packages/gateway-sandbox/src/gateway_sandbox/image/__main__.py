"""``python -m gateway_sandbox.image build [--out DIR]``."""

from __future__ import annotations

import sys

from gateway_sandbox.image import main

sys.exit(main(sys.argv[1:]))

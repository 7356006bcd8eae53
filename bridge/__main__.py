import sys

from .server import main

import os

sys.exit(main(prog=os.environ.get("CALLSIM_PROG", "python -m callsim.bridge")))

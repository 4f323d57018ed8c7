"""Entry point: `python -m indexer`."""

import sys

from indexer.server import SPEC
from kit.runtime import run

if __name__ == "__main__":
    # Search shares this process with bulk work running in threads: hand the GIL
    # over more often (default 5 ms) so a query's handler is not kept waiting.
    sys.setswitchinterval(0.001)
    run(SPEC)

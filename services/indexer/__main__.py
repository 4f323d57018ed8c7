"""Entry point: `python -m indexer`."""

from indexer.server import SPEC
from kit.runtime import run

if __name__ == "__main__":
    run(SPEC)

"""Entry point: `python -m indexer`."""

from kit.runtime import run

from indexer.server import SPEC

if __name__ == "__main__":
    run(SPEC)

"""Entry point: `python -m embedder`."""

from embedder.server import SPEC
from kit.runtime import run

if __name__ == "__main__":
    run(SPEC)

"""Entry point: `python -m embedder`."""

from kit.runtime import run

from embedder.server import SPEC

if __name__ == "__main__":
    run(SPEC)

"""Entry point: `python -m resources`."""

from kit.runtime import run
from resources.server import SPEC

if __name__ == "__main__":
    run(SPEC)

"""Entry point: `python -m orchestrator`."""

from kit.runtime import run
from orchestrator.server import SPEC

if __name__ == "__main__":
    run(SPEC)

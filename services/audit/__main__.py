"""Entry point: `python -m audit`."""

from audit.server import SPEC
from kit.runtime import run

if __name__ == "__main__":
    run(SPEC)

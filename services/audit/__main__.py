"""Entry point: `python -m audit`."""

from kit.runtime import run

from audit.server import SPEC

if __name__ == "__main__":
    run(SPEC)

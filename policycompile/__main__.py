"""``python -m policycompile``."""

from ._cli import run

if __name__ == "__main__":
    run()

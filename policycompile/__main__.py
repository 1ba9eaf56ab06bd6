"""``python -m policycompile``."""

from ._commands.cli import run

if __name__ == "__main__":
    run()

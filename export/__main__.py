"""``python -m ser.export``: the same command as ``ser-export``."""

from ser.export.cli import main

if __name__ == "__main__":
    main(prog_name="python -m ser.export")

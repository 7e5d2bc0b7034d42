"""``python -m ser.training``: the same command as ``ser-train``."""

from ser.training.cli import main

if __name__ == "__main__":
    main(prog_name="python -m ser.training")

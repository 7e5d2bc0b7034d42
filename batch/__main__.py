"""``python -m ser.batch``: the same command as ``ser-batch``."""

from ser.batch.cli import main

if __name__ == "__main__":
    main(prog_name="python -m ser.batch")

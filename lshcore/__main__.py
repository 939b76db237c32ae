"""``python -m lshcore`` runs the command-line interface."""

from lshcore.cli import main

if __name__ == "__main__":
    main()

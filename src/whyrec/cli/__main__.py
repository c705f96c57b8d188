"""``python -m whyrec.cli`` runs the command line."""

from whyrec.cli import main

if __name__ == "__main__":
    main()

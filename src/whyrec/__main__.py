"""``python -m whyrec`` runs the command line."""

from whyrec.cli import main

if __name__ == "__main__":
    main()

"""``python -m logpipe`` runs the CLI."""

from logpipe.cli import main

if __name__ == "__main__":
    main()

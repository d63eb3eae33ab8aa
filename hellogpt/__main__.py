"""`python -m hellogpt` runs the same CLI as the `hellogpt` console script."""

from hellogpt.cli import main

if __name__ == "__main__":
    main()

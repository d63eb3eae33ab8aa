"""`python -m hellogpt` and the `hellogpt` console script: the CLI, imported only when it runs.

The console script imports this module at its top, and so does every worker process `prepare` spawns (it
re-runs the script to rebuild `__main__`): keeping the Typer app's imports inside `main` spares each worker them.
"""


def main() -> None:
    from hellogpt.cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()

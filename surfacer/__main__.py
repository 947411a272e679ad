"""`python -m surfacer`: the same front door as the `surfacer` command."""

from surfacer.cli import main

# Guarded: a process started with multiprocessing's "spawn" (the re-scorer of
# `surfacer ingest --rescore`) imports this module again and must not run the CLI.
if __name__ == "__main__":
    main()

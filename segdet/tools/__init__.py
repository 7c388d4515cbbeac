"""Small commands around segdet's data: ``python -m segdet.tools.<name> --help``."""

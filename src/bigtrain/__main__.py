"""`python -m bigtrain`: the same command as `bigtrain`."""

from bigtrain.cli import command

if __name__ == "__main__":
    command()

"""`python -m bigtrain`: the same command as `bigtrain`."""

from bigtrain.cli import main

if __name__ == "__main__":
    main()

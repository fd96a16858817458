"""Print the Markdown table of Lightning's Trainer arguments and how bigtrain sets each one.

    python scripts/trainer_args.py

docs/configuration.md holds its output ("Other Lightning Trainer arguments"); a test compares
the two for the Lightning version the table names.
"""

from __future__ import annotations

from dataclasses import fields

from bigtrain.config.schema_run import TrainerConfig
from bigtrain.config.trainer_args import markdown_table


def main() -> None:
    print(markdown_table({f.name for f in fields(TrainerConfig)} - {"lightning"}))


if __name__ == "__main__":
    main()

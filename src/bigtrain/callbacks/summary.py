"""The model summary at the start of fit: the model's layers and parameter counts only.

Lightning's RichModelSummary lists every child of the LightningModule, which for bigtrain means
a dozen metric containers with zero parameters, and a FLOPs column that is zero unless a
forward pass was traced. `summarize` is the hook Lightning provides for drawing the summary
differently; this one keeps the rows of `model` and its layers and leaves FLOPs out (the plan
printed before it gives the FLOPs per sample).
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary import get_formatted_model_size, get_human_readable_count

SHOWN = ("Name", "Type", "Params", "Params per Device", "Mode")


class ModelSummary(RichModelSummary):
    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        names = columns.get("Name", [])
        keep = [i for i, name in enumerate(names) if name == "model" or name.startswith("model.")]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        shown = [c for c in SHOWN if c in columns]
        for column in shown:
            table.add_column(column, justify="right" if column.startswith("Params") else "left")
        for i in keep:
            table.add_row(*(columns[c][i] for c in shown))
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"parameters: {get_human_readable_count(int(trainable_parameters))} trainable, "
            f"{get_human_readable_count(int(frozen))} frozen, "
            f"{get_formatted_model_size(model_size)} MB"
        )

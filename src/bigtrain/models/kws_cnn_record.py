"""The keyword-spotting CNN's record (models/family.py): log-mels in, its conv blocks as
activation checkpointing, compile and FSDP units, no tensor-parallel plan. Its nn.Module and
torch functions: models/kws_cnn.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family


def _depth_fits(cfg: Any) -> Iterator[str]:
    """Each block halves bands and frames; CTC needs per-frame outputs, which this net has not."""
    m, d = cfg.model, cfg.data
    if getattr(d, "transcribed", False):
        yield "model=kws_cnn/* classifies clips; transcripts need model=audio_transformer/* with model.head=ctc"
    bands = getattr(d, "n_mels", None)
    if bands and min(bands, getattr(d, "frames", bands)) < 2 ** len(m.channels):
        yield (
            f"{len(m.channels)} conv blocks halve {bands} mel bands below 1: use at most "
            f"{min(bands, d.frames).bit_length() - 1} model.channels, or more data.n_mels"
        )


FAMILY = Family(name="kws_cnn", inputs="audio", module="bigtrain.models.kws_cnn", checks=(_depth_fits,))

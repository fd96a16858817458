"""The audio Transformer's record (models/family.py): log-mels in, its encoder blocks (the ViT's)
as activation checkpointing, compile and FSDP units, no tensor-parallel plan. Its nn.Module and
torch functions: models/audio_transformer.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family


def _shape(cfg: Any) -> Iterator[str]:
    """Width over heads, patches against the clip's frames, and the head against the data."""
    m, d = cfg.model, cfg.data
    if m.dim % m.heads:
        yield f"model.dim={m.dim} is not divisible by model.heads={m.heads}: change one of them"
    frames = getattr(d, "frames", None)
    if frames is not None and frames < m.patch_frames:
        yield (
            f"model.patch_frames={m.patch_frames} is longer than the {frames} frames of a clip: "
            "lower it, or raise data.max_seconds"
        )
    bands = getattr(d, "n_mels", None)
    if bands is not None and m.stem_channels and bands < 2:
        yield f"model.stem_channels={m.stem_channels} halves data.n_mels={bands}: use more bands, or model.stem_channels=0"
    transcribed = getattr(d, "transcribed", False)
    if transcribed and m.head != "ctc":
        yield "data.manifest gives transcripts: set model.head=ctc (and metrics=ctc)"
    if not transcribed and m.head == "ctc":
        yield "model.head=ctc needs transcripts: set data.manifest=FILE (path,text rows), or model.head=classify"


FAMILY = Family(
    name="audio_transformer", inputs="audio", module="bigtrain.models.audio_transformer", checks=(_shape,)
)

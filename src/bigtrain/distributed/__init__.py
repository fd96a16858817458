"""Distribution: parallel plans per model family (TP, activation checkpointing, compile, FSDP2)
and the Lightning strategy that carries them."""

"""Speech clips as an in-memory LightningDataModule, and the log-mel front end.

Every clip is decoded once with soundfile, averaged to mono, resampled to `sample_rate` (soxr)
and cut or zero-padded to `max_seconds`, and kept as float32 waveforms: 10,000 one-second clips
at 16 kHz hold 610 MiB (`data.max_memory_mb` bounds it, checked before anything is decoded).

The loaders (the same TensorLoader as the other in-memory data: global batch per optimizer step,
each evaluation sample on one rank) hand out waveforms; `on_after_batch_transfer`, which
Lightning calls once a batch is on the model's device, turns them into log-mel spectrograms
there, batched (LogMel: a Hann-windowed STFT, a Slaney mel filterbank as librosa's, log), then
normalises them and, on training batches, applies SpecAugment's time and frequency masks.
`bigtrain predict` and `eval` on new clips run the same LogMel with the run's saved statistics
(data/preprocess.py).

Transcripts (a manifest) become label indices (data/audio_record.py: 0 is the CTC blank, 1 the
space), padded with zeros, and their lengths: batches are (waveforms, labels, lengths).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from bigtrain.config import SPLITS, ConfigError
from bigtrain.config.errors import first_line
from bigtrain.config.schema_data import AudioFolderDataConfig
from bigtrain.data.audio_record import (
    audio_spec,
    class_names,
    clips_in,
    manifest_base,
    manifest_rows,
    manifest_splits,
    split_folders,
    vocabulary,
)
from bigtrain.data.sklearn import SklearnDataModule, split

# What the front end needs, as preprocessing.json keeps it (data/preprocess.py).
FEATURE_KEYS = ("sample_rate", "n_mels", "win_ms", "hop_ms", "f_min", "f_max", "normalize")
LOG_FLOOR = 1e-6  # added to mel energies before the log: digital silence stays finite


def datamodule(cfg) -> AudioFolderDataModule:
    """The data module of a validated RunConfig whose data is speech clips."""
    return AudioFolderDataModule(cfg.data, seed=cfg.seed)


# ------------------------------------------------------------------ decoding


def decode_clip(path: Path, sample_rate: int, samples: int, resample: bool = True, downmix: bool = True):
    """One clip as float32 mono samples at `sample_rate`, cut or zero-padded to `samples`."""
    import soundfile as sf

    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # validation probed every header (audio_record.probe_audio); a file changed since
        reason = first_line(e)
        raise ConfigError(f"cannot read audio {path}: {reason}; remove or replace the file") from e
    if len(wave) == 0:
        raise ConfigError(f"audio file {path} holds no samples: remove or replace the file")
    if wave.shape[1] > 1 and not downmix:
        raise ConfigError(
            f"audio file {path} has {wave.shape[1]} channels but data.downmix=false asks for mono clips: "
            "set data.downmix=true to average them, or give mono clips"
        )
    wave = wave.mean(axis=1)
    if rate != sample_rate:
        if not resample:
            raise ConfigError(
                f"audio file {path} is {rate} Hz, not data.sample_rate={sample_rate}: "
                "set data.resample=true, or give clips at that rate"
            )
        import soxr

        wave = soxr.resample(wave, rate, sample_rate).astype(np.float32)
    out = np.zeros(samples, dtype=np.float32)
    n = min(samples, len(wave))
    out[:n] = wave[:n]
    return out


def decode(files: list[Path], d: Any) -> torch.Tensor:
    """(N, samples) float32 waveforms of `files` (data config or preprocessing namespace `d`)."""
    samples = round(d.max_seconds * d.sample_rate)
    out = torch.empty((len(files), samples), dtype=torch.float32)
    for i, path in enumerate(files):
        out[i] = torch.from_numpy(decode_clip(path, d.sample_rate, samples, d.resample, d.downmix))
    return out


# ------------------------------------------------------------------ features


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, logarithmic above."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(
        hz >= min_log_hz, min_log_mel + torch.log(hz.clamp_min(min_log_hz) / min_log_hz) / logstep, hz / f_sp
    )


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the mel scale, each scaled
    to unit area ("slaney" norm): librosa.filters.mel's defaults, computed in float64."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    low, high = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(float(low), float(high), n_mels + 2, dtype=torch.float64))
    width = edges.diff()
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).float()


class LogMel(nn.Module):
    """Waveforms (B, samples) -> log-mel spectrograms (B, 1, n_mels, frames), normalised.

    Frames are centred (the clip is zero-padded by half an FFT either side), one per hop: a
    second at 16 kHz with a 10 ms hop is 101 frames. The FFT is the window's length rounded up
    to a power of two (25 ms at 16 kHz: a 400-sample window in a 512-point FFT)."""

    def __init__(
        self,
        sample_rate: int,
        n_mels: int,
        win_ms: float,
        hop_ms: float,
        f_min: float,
        f_max: float | None,
        normalize: str = "none",
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.win = round(win_ms * sample_rate / 1000)
        self.hop = max(1, round(hop_ms * sample_rate / 1000))
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.normalize = normalize
        fbank = mel_filterbank(sample_rate, self.n_fft, n_mels, f_min, f_max or sample_rate / 2)
        self.register_buffer("fbank", fbank, persistent=False)
        self.register_buffer("window", torch.hann_window(self.win, periodic=True), persistent=False)
        mean_t = torch.tensor(mean, dtype=torch.float32) if mean is not None else torch.zeros(n_mels)
        std_t = torch.tensor(std, dtype=torch.float32) if std is not None else torch.ones(n_mels)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log mel energies, before normalisation."""
        spec = torch.stft(
            wave.float(),
            self.n_fft,
            hop_length=self.hop,
            win_length=self.win,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, n_fft/2+1, frames)
        return torch.log(torch.matmul(self.fbank, power) + LOG_FLOOR)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.log_mel(wave)
        if self.normalize == "dataset":
            x = (x - self.mean[:, None]) / self.std[:, None]
        elif self.normalize == "clip":
            x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-3)
        return x[:, None]

    @torch.no_grad()
    def band_stats(self, waves: torch.Tensor, chunk: int = 256) -> tuple[list[float], list[float]]:
        """Per-band mean and std of the log-mels of `waves` (the train split), in float64 sums."""
        total = torch.zeros(self.fbank.shape[0], dtype=torch.float64)
        squares = torch.zeros_like(total)
        count = 0
        for start in range(0, len(waves), chunk):
            x = self.log_mel(waves[start : start + chunk]).double()
            total += x.sum(dim=(0, 2))
            squares += (x * x).sum(dim=(0, 2))
            count += x.shape[0] * x.shape[2]
        mean = total / max(count, 1)
        std = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
        return mean.float().tolist(), std.float().tolist()


def front_end(prep: dict) -> LogMel:
    """The LogMel of a run's preprocessing (its settings and train-split statistics)."""
    return LogMel(*(prep[k] for k in FEATURE_KEYS), mean=prep.get("mean"), std=prep.get("std"))


def spec_augment(x: torch.Tensor, d: AudioFolderDataConfig, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment's masks (Park et al., 2019) on (B, 1, n_mels, frames): `time_masks` spans of
    up to `time_mask_frames` frames and `freq_masks` of up to `freq_mask_bands` bands per clip
    set to 0 (the mean, after normalisation). Drawn on the CPU from `gen`: the same on any device."""
    b, _, bands, frames = x.shape
    keep = torch.ones(b, bands, frames, dtype=torch.bool)
    for count, widest, size, axis in (
        (d.time_masks, d.time_mask_frames, frames, 2),
        (d.freq_masks, d.freq_mask_bands, bands, 1),
    ):
        positions = torch.arange(size)
        for _ in range(count):
            width = torch.randint(0, min(widest, size) + 1, (b,), generator=gen)
            start = (torch.rand(b, generator=gen) * (size - width + 1)).long()
            hit = (positions[None] >= start[:, None]) & (positions[None] < (start + width)[:, None])
            keep &= ~(hit[:, None, :] if axis == 2 else hit[:, :, None])
    return x * keep[:, None].to(x.device, x.dtype)


# ------------------------------------------------------------------ labels


def encode_texts(texts: list[str], vocab: list[str], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (N, longest) padded with 0, lengths (N,)) of transcripts, by `vocab`'s indices."""
    index = {c: i for i, c in enumerate(vocab) if c}
    longest = max((len(t) for t in texts), default=1)
    labels = torch.zeros((len(texts), max(longest, 1)), dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for i, text in enumerate(texts):
        unknown = next((c for c in text if c not in index), None)
        if unknown is not None:
            raise ConfigError(
                f"{where}: the transcript {text!r} has {unknown!r}, a character the run's manifest "
                "never had: remove it or train on a manifest that has it"
            )
        labels[i, : len(text)] = torch.tensor([index[c] for c in text], dtype=torch.long)
        lengths[i] = len(text)
    return labels, lengths


def list_clips(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The clips of class folders in `folder` and their class indices; a class folder that is not
    one of `classes` is an error."""
    files, labels = [], []
    for i, name in enumerate(classes):
        found = clips_in(folder / name) if (folder / name).is_dir() else []
        files += found
        labels += [i] * len(found)
    unknown = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in classes
    )
    if unknown:
        raise ConfigError(
            f"{folder}/{unknown[0]} is a class the run does not have: use class folders of {classes}"
        )
    return files, np.array(labels, dtype=np.int64)


# ------------------------------------------------------------------ the data module


class AudioFolderDataModule(SklearnDataModule):
    def __init__(self, cfg: AudioFolderDataConfig, seed: int) -> None:
        pl.LightningDataModule.__init__(self)  # the parent's __init__ looks up scikit-learn specs
        self.cfg, self.seed = cfg, seed
        self.spec = audio_spec(cfg)
        self.classes = None if cfg.transcribed else class_names(cfg)
        self.vocab = vocabulary(manifest_rows(cfg)) if cfg.transcribed else None
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self.frontend = self._front_end(None, None)
        self._augment_gen: torch.Generator | None = None

    def _front_end(self, mean, std) -> LogMel:
        c = self.cfg
        return LogMel(c.sample_rate, c.n_mels, c.win_ms, c.hop_ms, c.f_min, c.f_max, c.normalize, mean, std)

    @property
    def class_names(self) -> list[str] | None:
        """The class folder names, in class index order (None for transcripts)."""
        return list(self.classes) if self.classes is not None else None

    def preprocessing(self) -> dict:
        """What a prediction needs (data/preprocess.py): decoding, the front end and its
        train-split statistics, and the classes or the transcripts' characters."""
        c = self.cfg
        return {
            "kind": "audio",
            **{k: getattr(c, k) for k in FEATURE_KEYS},
            "max_seconds": c.max_seconds,
            "resample": c.resample,
            "downmix": c.downmix,
            "mean": self.frontend.mean.tolist(),
            "std": self.frontend.std.tolist(),
            "classes": self.class_names,
            "vocabulary": self.vocab,
        }

    def describe(self) -> str | None:
        """The console's line about transcripts (class folders use sizes and class balance)."""
        if self.vocab is None:
            return None
        sizes = ", ".join(f"{k} {len(v[0])}" for k, v in self.splits.items())
        return f"data: {self.cfg.name}: {sizes} transcribed clips; {len(self.vocab)} labels (blank, space, characters)"

    def class_balance(self) -> dict[str, list[int]]:
        if self.vocab is not None:
            return {}
        return super().class_balance()

    def _files(self) -> dict[str, tuple[list[Path], Any]]:
        """Files and labels (class indices, or transcripts) per split."""
        c = self.cfg
        if c.transcribed:
            rows = manifest_rows(c)
            base = manifest_base(c)
            parts = manifest_splits(c, rows, self.seed)
            return {
                s: ([base / rows[i]["path"] for i in ix], [rows[i]["text"] for i in ix])
                for s, ix in parts.items()
            }
        folders = split_folders(c)
        if folders:
            return {s: list_clips(folders[s], self.classes) for s in SPLITS}
        files, labels = list_clips(Path(c.root), self.classes)
        try:
            idx = split(np.arange(len(files)), labels, c.val_fraction, c.test_fraction, self.seed)
        except ValueError as e:  # too few clips per class for a stratified split
            raise ConfigError(
                f"data.root={c.root} cannot be split by data.val_fraction/test_fraction: {e}"
            ) from e
        return {s: ([files[i] for i in ix], ys) for s, (ix, ys) in idx.items()}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        c = self.cfg
        parts = self._files()
        for s, (files, _) in parts.items():
            if not files:
                raise ConfigError(f"the {s} split of data=audio_folder has no clips: add some")
        splits = {}
        for s, (files, labels) in parts.items():
            waves = decode(files, c)
            if self.vocab is not None:
                splits[s] = (waves, *encode_texts(labels, self.vocab, str(c.manifest)))
            else:
                splits[s] = (waves, torch.from_numpy(labels))
        self.splits = splits
        mean = std = None
        if c.normalize == "dataset":
            mean, std = self.frontend.band_stats(splits["train"][0])
        self.frontend = self._front_end(mean, std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Waveforms -> log-mels on the batch's device (the model's); SpecAugment on training
        batches. Lightning calls this for the batches of this module's loaders."""
        wave, *rest = batch
        if self.frontend.fbank.device != wave.device:
            self.frontend = self.frontend.to(wave.device)
        x = self.frontend(wave)
        c = self.cfg
        if (c.time_masks or c.freq_masks) and self.trainer is not None and self.trainer.training:
            if self._augment_gen is None:
                rank = self._topology()[0]
                self._augment_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + rank)
            x = spec_augment(x, c, self._augment_gen)
        return (x, *rest)

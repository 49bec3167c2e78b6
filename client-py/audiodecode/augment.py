"""Augmentations run by the daemon's workers, after the cache and the crop.

Each applies with probability ``p``; its parameters are drawn per item from
(seed, epoch, item), so a run is reproducible. Pass a list to the loader::

    AudioDataLoader(files, augment=[Gain(-6, 6), Noise(snr=(5, 20)),
                                    Speed([0.9, 1.0, 1.1]), Reverb("rirs.jsonl", p=0.3)])

Noise clips and impulse responses are given like a loader's files: a list of paths, a
JSONL/CSV manifest or a directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from audiodecode._datasets import PathLike, resolve_dataset
from audiodecode._protocol import AnyAugment, AnyDataset, Augment
from audiodecode._validate import number


def _probability(p: float) -> float:
    return number("probability p", p, at_least=0, at_most=1)


def _clips(source: PathLike | Sequence[PathLike], name: str) -> AnyDataset:
    return resolve_dataset(source, None, name)


@dataclass(frozen=True)
class Gain:
    """Gain uniform in ``[min_db, max_db]`` decibels."""

    min_db: float = -6.0
    max_db: float = 6.0
    p: float = 1.0

    def to_wire(self) -> AnyAugment:
        if self.min_db > self.max_db:
            raise ValueError(f"Gain({self.min_db}, {self.max_db}): min above max")
        return Augment.Gain(min_db=self.min_db, max_db=self.max_db, p=_probability(self.p))


@dataclass(frozen=True)
class Noise:
    """Additive noise at an SNR uniform in ``snr`` decibels: white, or clips from
    ``noise`` (looped and started at a random point)."""

    snr: tuple[float, float] = (5.0, 20.0)
    noise: PathLike | Sequence[PathLike] | None = None
    p: float = 1.0

    def to_wire(self) -> AnyAugment:
        lo, hi = self.snr
        if lo > hi:
            raise ValueError(f"Noise(snr={self.snr}): min above max")
        source = None if self.noise is None else _clips(self.noise, "noise")
        return Augment.Noise(min_snr_db=lo, max_snr_db=hi, noise=source, p=_probability(self.p))


@dataclass(frozen=True)
class Speed:
    """Speed perturbation by resampling: one of ``factors`` per item (0.9 plays slower and
    lasts 1/0.9 as long; pitch follows, as in Kaldi's speed perturbation)."""

    factors: Sequence[float] = (0.9, 1.0, 1.1)
    p: float = 1.0

    def to_wire(self) -> AnyAugment:
        return Augment.Speed(factors=[float(f) for f in self.factors], p=_probability(self.p))


@dataclass(frozen=True)
class Shift:
    """Time shift uniform in ``±max_seconds``, filling with silence (length kept)."""

    max_seconds: float = 0.1
    p: float = 1.0

    def to_wire(self) -> AnyAugment:
        return Augment.Shift(max_seconds=self.max_seconds, p=_probability(self.p))


@dataclass(frozen=True)
class Reverb:
    """Reverberation: FFT convolution with an impulse response drawn from ``rirs``,
    aligned on its direct path and keeping the clip's level."""

    rirs: PathLike | Sequence[PathLike]
    p: float = 0.3

    def to_wire(self) -> AnyAugment:
        return Augment.Reverb(rirs=_clips(self.rirs, "rirs"), p=_probability(self.p))


AugmentLike = Gain | Noise | Speed | Shift | Reverb

"""What ``eval.py`` mixes into the test clips (``overlap_type``): other clips, white noise or speech,
and the sound files it can read.
"""

import glob
import logging
import os

import numpy as np
import soundfile as sf
import torch

from lmac.audio.io import read_audio_mono
from lmac.data.wham import combine_batches, fit_length, make_noise_stream

logger = logging.getLogger(__name__)


AUDIO_EXTENSIONS = tuple(sorted({".wav", ".flac", ".ogg", *(f".{kind.lower()}" for kind in sf.available_formats())}))


class ClipOverlap:
    """Contaminates clips with other recordings: ``0.8 s/||s|| + 0.2 u/||u||``, peak-normalised.

    ``u`` is a random file of ``paths``, mono, resampled, a random excerpt
    of the clip's length or zero-padded to it. Draws come from one generator
    seeded once, so a run is reproducible.

    Arguments
    ---------
    paths : list of str
    sample_rate : int
    seed : int
    """

    def __init__(self, paths, sample_rate, seed):
        if not paths:
            raise ValueError("ClipOverlap needs at least one recording to mix in.")
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.rng = np.random.default_rng(seed)

    def other_clip(self, num_samples):
        """A random excerpt (or zero-padded recording) of ``num_samples``, shape ``[num_samples]``."""
        recording = read_audio_mono(self.paths[self.rng.integers(len(self.paths))], self.sample_rate)
        start = int(self.rng.integers(max(recording.shape[0] - num_samples, 0) + 1))
        return fit_length(recording[start:], num_samples)

    def mix_into(self, clean):
        """``clean`` ``[batch, samples]`` contaminated as the class docstring says."""
        others = torch.stack([self.other_clip(clean.shape[1]) for _ in range(clean.shape[0])]).to(clean.device)
        return combine_batches(clean, others, clean_weight=0.8, noise_weight=0.2)


class WhiteNoiseOverlap:
    """Contaminates clips with Gaussian noise: ``s/||s|| + 0.5 n/||n||``, peak-normalised.

    Arguments
    ---------
    seed : int
        Seeds the one generator of the run.
    """

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def mix_into(self, clean):
        """``clean`` ``[batch, samples]`` with white noise mixed in."""
        noise = torch.randn(clean.shape, generator=self.generator).to(clean.device)
        return combine_batches(clean, noise, clean_weight=1.0, noise_weight=0.5)


def audio_files(folder):
    """Sorted paths of the audio files in ``folder`` (recursively): those libsndfile opens, whatever
    their extension (``.oga``, ``.opus``, ...), and those named as audio (``.wav``, ``.flac``, ...).

    A file named as audio that does not open stays in the list, so that it is
    reported as failed; other files are named in a warning and left alone.
    """
    paths = sorted(path for path in glob.glob(os.path.join(glob.escape(folder), "**", "*"), recursive=True) if os.path.isfile(path))
    audio = [path for path in paths if path.lower().endswith(AUDIO_EXTENSIONS) or opens_as_audio(path)]
    others = sorted(set(paths) - set(audio))
    if others:
        logger.warning("Not audio files, left alone: %s", ", ".join(others))
    return audio


def opens_as_audio(path):
    """True when libsndfile recognises the content of ``path`` as audio."""
    try:
        sf.info(path)
    except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
        return False
    return True


def make_overlap(hparams, test_set):
    """The contamination of the evaluation: WHAM!'s held-out ``tt`` noise, an out-of-domain overlap, or None."""
    overlap_type = hparams["overlap_type"]
    if overlap_type is None:
        return make_noise_stream(hparams, split="tt")
    if overlap_type == "white_noise":
        return WhiteNoiseOverlap(hparams["seed"])
    if overlap_type == "mixtures":
        with test_set.output_keys_as(["wav"]):
            paths = [item["wav"] for item in test_set]
        return ClipOverlap(paths, hparams["sample_rate"], hparams["seed"])
    return ClipOverlap(audio_files(hparams["speech_folder"]), hparams["sample_rate"], hparams["seed"])

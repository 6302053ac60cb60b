"""What ``eval.py`` mixes into the test clips (``overlap_type``): other clips, clips of another class at
0 dB, white noise or speech, keeping the parts apart (``MixedBatch``); and the sound files it can read.
"""

import glob
import logging
import os

import numpy as np
import soundfile as sf
import torch

from lmac.audio.io import fit_length, read_audio_mono
from lmac.data.esc50 import has_stems, stem_path
from lmac.data.wham import MixedBatch, make_noise_stream

logger = logging.getLogger(__name__)


AUDIO_EXTENSIONS = tuple(sorted({".wav", ".flac", ".ogg", *(f".{kind.lower()}" for kind in sf.available_formats())}))


class ClipOverlap:
    """Contaminates clips with other recordings: ``a s/||s|| + b u/||u||``, peak-normalised.

    ``u`` is a random file of ``paths``, mono, resampled, a random excerpt
    of the clip's length or zero-padded to it. With ``labels`` (the class
    index of each path), ``u`` is drawn from another class than the clip's
    whenever the clip's class is given, and the mixture keeps ``u``'s class;
    with ``event_paths`` (each path's event stem, ``esc50.stem_path``) it also
    keeps ``u``'s event, the same excerpt. Draws come from one generator seeded
    once, so a run is reproducible.

    Arguments
    ---------
    paths : list of str
    sample_rate : int
    seed : int
    weights : tuple of float
        ``(a, b)``: the spec's ``(0.8, 0.2)``, or ``(1, 1)``, 0 dB.
    labels : list of int or None
    event_paths : list of str or None
    """

    def __init__(self, paths, sample_rate, seed, weights=(0.8, 0.2), labels=None, event_paths=None):
        if not paths:
            raise ValueError("ClipOverlap needs at least one recording to mix in.")
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.rng = np.random.default_rng(seed)
        self.weights = weights
        self.labels = None if labels is None else np.asarray(labels)
        self.event_paths = event_paths

    def draw(self, label):
        """Index of a random path: of another class than ``label`` (None: any) where the labels allow it."""
        if self.labels is None or label is None or not (self.labels != label).any():
            return int(self.rng.integers(len(self.paths)))
        return int(self.rng.choice(np.flatnonzero(self.labels != label)))

    def other_clip(self, index, num_samples):
        """An excerpt of ``num_samples`` of path ``index`` (zero-padded), and of its event stem at the same time
        (None without ``event_paths``): ``[num_samples]`` each."""
        recording = read_audio_mono(self.paths[index], self.sample_rate)
        start = int(self.rng.integers(max(recording.shape[0] - num_samples, 0) + 1))
        if self.event_paths is None:
            return fit_length(recording[start:], num_samples), None
        event = fit_length(read_audio_mono(self.event_paths[index], self.sample_rate), recording.shape[0])
        return fit_length(recording[start:], num_samples), fit_length(event[start:], num_samples)

    def mix(self, clean, labels=None):
        """``clean`` ``[batch, samples]`` (of classes ``labels`` ``[batch]``, or None) contaminated as the class
        docstring says: a ``MixedBatch``."""
        wanted = [None] * clean.shape[0] if labels is None else labels.tolist()
        indices, drawn = [], []
        for label in wanted:  # a path, then its excerpt: one generator's draws in the order of the clips
            indices.append(self.draw(label))
            drawn.append(self.other_clip(indices[-1], clean.shape[1]))
        others = torch.stack([clip for clip, _ in drawn]).to(clean.device)
        events = None if self.event_paths is None else torch.stack([event for _, event in drawn]).to(clean.device)
        added_labels = None if self.labels is None else torch.as_tensor(self.labels[indices], device=clean.device)
        return MixedBatch.of_mixture(clean, others, *self.weights, noise_event=events, noise_labels=added_labels)


class WhiteNoiseOverlap:
    """Contaminates clips with Gaussian noise: ``s/||s|| + 0.5 n/||n||``, peak-normalised.

    Arguments
    ---------
    seed : int
        Seeds the one generator of the run.
    """

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def mix(self, clean, labels=None):
        """``clean`` ``[batch, samples]`` with white noise mixed in: a ``MixedBatch`` (``labels`` unused)."""
        noise = torch.randn(clean.shape, generator=self.generator).to(clean.device)
        return MixedBatch.of_mixture(clean, noise, clean_weight=1.0, noise_weight=0.5)


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


def test_clips(test_set):
    """The paths and class indices of the clips of ``test_set``."""
    with test_set.output_keys_as(["wav", "class_string_encoded"]):
        items = list(test_set)
    return [item["wav"] for item in items], [int(item["class_string_encoded"]) for item in items]


def other_clips_overlap(hparams, test_set):
    """``mixtures``: the spec's ``0.8 s/||s|| + 0.2 u/||u||``, ``u`` another test clip."""
    paths, _ = test_clips(test_set)
    return ClipOverlap(paths, hparams["sample_rate"], hparams["seed"])


def class_mixtures_overlap(hparams, test_set):
    """``class_mixtures``: ``s`` and a test clip of another class at 0 dB, its class and (where the data keeps
    stems) its event kept, to ask which of the two sounds made the decision."""
    paths, labels = test_clips(test_set)
    ids = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    stems = has_stems(hparams["data_folder"], ids)
    event_paths = [stem_path(hparams["data_folder"], clip_id, "event") for clip_id in ids] if stems else None
    return ClipOverlap(paths, hparams["sample_rate"], hparams["seed"], (1.0, 1.0), labels, event_paths)


def white_noise_overlap(hparams, test_set):
    """``white_noise``: ``s/||s|| + 0.5 n/||n||``."""
    return WhiteNoiseOverlap(hparams["seed"])


def speech_overlap(hparams, test_set):
    """``speech``: ``0.8 s/||s|| + 0.2 u/||u||``, ``u`` a recording of ``speech_folder``."""
    return ClipOverlap(audio_files(hparams["speech_folder"]), hparams["sample_rate"], hparams["seed"])


# eval.py's ``overlap_type``: how each contamination is built from the hyperparameters and the test set.
OVERLAPS = {
    "mixtures": other_clips_overlap,
    "class_mixtures": class_mixtures_overlap,
    "white_noise": white_noise_overlap,
    "speech": speech_overlap,
}


def make_overlap(hparams, test_set):
    """The contamination of the evaluation: WHAM!'s held-out ``tt`` noise, an ``OVERLAPS`` one, or None."""
    if hparams["overlap_type"] is None:
        return make_noise_stream(hparams, split="tt")
    return OVERLAPS[hparams["overlap_type"]](hparams, test_set)

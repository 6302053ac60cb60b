"""An ESC-50-format set from real recordings, with each clip's event and background kept.

Any folder of labelled recordings, one sub-folder per class, gives the events;
another folder of recordings gives the backgrounds. Each clip places one event
recording at a random time in a random excerpt of a background, at a random
event-to-background ratio, and writes what ``make_synthetic_data.py`` writes:
``audio/``, ``meta/esc50.csv``, ``meta/events.csv`` (the event's span and the
band holding most of its energy) and ``meta/stems/`` (``esc50.write_stems``), so
every listening measure has its ground truth. ``make_real_set.py`` is its
command line.
"""

import dataclasses
import logging
import os

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from lmac.audio.io import read_audio_mono
from lmac.checks import ExistingFolderError
from lmac.data.contamination import audio_files
from lmac.data.esc50 import write_stems

logger = logging.getLogger(__name__)

N_FOLDS = 5
# The share of an event's energy its ``events.csv`` band holds, split evenly below and above it.
BAND_ENERGY_SHARE = 0.9
# An event's start and end are where its 20 ms frames first and last reach this share of its loudest one.
ACTIVE_FRAME_LEVEL = 1e-3


@dataclasses.dataclass(frozen=True)
class RealSetSettings:
    """How the clips are made.

    ``ratio_db``: the range of the event-to-background energy ratio over the
    event's span, drawn per clip; ``max_event_s``: events are cut to this
    length; ``clips_per_class``: at most this many clips of a class (one per
    recording); ``peak``: the clip's peak.
    """

    sample_rate: int = 44100
    clip_seconds: float = 5.0
    ratio_db: tuple = (0.0, 10.0)
    max_event_s: float = 2.0
    clips_per_class: int = 40
    peak: float = 0.9
    seed: int = 1234


def class_folders(events_folder):
    """``{class name: sorted audio paths}`` of the sub-folders of ``events_folder`` that hold audio.

    Raises
    ------
    FileNotFoundError
        Fewer than two such sub-folders, or one with fewer than ``N_FOLDS`` recordings.
    """
    if not os.path.isdir(events_folder):
        raise FileNotFoundError(f"events_folder={events_folder!r} is not a folder; give one sub-folder of recordings per class.")
    classes = {}
    for name in sorted(os.listdir(events_folder)):
        folder = os.path.join(events_folder, name)
        if os.path.isdir(folder) and audio_files(folder):
            classes[name] = audio_files(folder)
    short = [name for name, paths in classes.items() if len(paths) < N_FOLDS]
    if len(classes) < 2 or short:
        raise FileNotFoundError(
            f"events_folder={events_folder!r} needs at least two class sub-folders of at least {N_FOLDS} recordings each "
            f"(one per fold); found {len(classes)} classes{', too few recordings in ' + ', '.join(short) if short else ''}."
        )
    return classes


def active_span(event, sample_rate):
    """``(start, stop)`` samples of ``event`` ``[samples]`` between its first and last frame that reach
    ``ACTIVE_FRAME_LEVEL`` of its loudest 20 ms frame.

    Example
    -------
    >>> event = np.zeros(8000)
    >>> event[2000:3000] = 1.0
    >>> active_span(event, 8000)
    (1920, 3040)
    """
    frame = max(1, int(0.02 * sample_rate))
    count = max(1, len(event) // frame)
    energies = np.square(event[: count * frame]).reshape(count, frame).sum(axis=1)
    loud = np.flatnonzero(energies >= ACTIVE_FRAME_LEVEL * energies.max())
    return int(loud[0] * frame), int(min(len(event), (loud[-1] + 1) * frame))


def energy_band(event, sample_rate):
    """``(fmin, fmax)`` Hz holding ``BAND_ENERGY_SHARE`` of the energy of ``event`` ``[samples]``, the rest split
    evenly below and above.

    Example
    -------
    >>> time = np.arange(16000) / 16000
    >>> low, high = energy_band(np.sin(2 * np.pi * 1000 * time), 16000)
    >>> 990 <= low <= 1000 <= high <= 1010
    True
    """
    power = np.square(np.abs(np.fft.rfft(event)))
    cumulative = np.cumsum(power) / max(power.sum(), 1e-30)
    frequencies = np.fft.rfftfreq(len(event), 1 / sample_rate)
    tail = (1 - BAND_ENERGY_SHARE) / 2
    return float(frequencies[np.searchsorted(cumulative, tail)]), float(frequencies[np.searchsorted(cumulative, 1 - tail)])


def excerpt(recording, num_samples, rng):
    """A random excerpt of ``num_samples`` of ``recording`` ``[samples]``, the recording repeated when shorter."""
    if len(recording) < num_samples:
        recording = np.tile(recording, int(np.ceil(num_samples / max(len(recording), 1))) + 1)
    start = int(rng.integers(len(recording) - num_samples + 1))
    return recording[start : start + num_samples]


def make_clip(event_path, background_paths, settings, rng):
    """One clip: the event recording at a random time over a background excerpt, scaled to ``settings.peak``.

    Returns
    -------
    clip, event : numpy.ndarray
        ``[samples]`` each, the event as it is in the clip.
    span : tuple of int
        The event's active ``(start, stop)`` in the clip.
    """
    rate, num_samples = settings.sample_rate, int(round(settings.clip_seconds * settings.sample_rate))
    recording = read_audio_mono(event_path, rate).numpy().astype(np.float64)
    start, stop = active_span(recording, rate)
    recording = recording[start : min(stop, start + int(settings.max_event_s * rate))]
    onset = int(rng.integers(int(0.1 * rate), num_samples - len(recording) - int(0.1 * rate)))
    event = np.zeros(num_samples)
    event[onset : onset + len(recording)] = recording
    background_path = background_paths[int(rng.integers(len(background_paths)))]
    background = excerpt(read_audio_mono(background_path, rate).numpy().astype(np.float64), num_samples, rng)
    span = slice(onset, onset + len(recording))
    ratio = 10 ** (rng.uniform(*settings.ratio_db) / 10)
    background *= np.sqrt(np.sum(event[span] ** 2) / max(ratio * np.sum(background[span] ** 2), 1e-30))
    scale = settings.peak / max(np.abs(event + background).max(), 1e-12)
    return ((event + background) * scale).astype(np.float32), event * scale, (span.start, span.stop)


def write_real_set(events_folder, backgrounds_folder, output_folder, settings=RealSetSettings()):
    """Writes the ESC-50-format set of the module's docstring in ``output_folder``; returns its ``esc50.csv`` rows.

    Recording ``i`` of a class (sorted by path, at most
    ``settings.clips_per_class``) goes to fold ``i % 5 + 1``; everything is
    drawn from ``numpy.random.default_rng(settings.seed)``.

    Raises
    ------
    lmac.checks.ExistingFolderError
        ``output_folder`` is not empty (a ``FileExistsError``): nothing is overwritten.
    FileNotFoundError
        ``class_folders``' errors, or no background recording.
    """
    if os.path.isdir(output_folder) and os.listdir(output_folder):
        raise ExistingFolderError(
            f"output_folder={output_folder!r} is not empty; choose a new folder (nothing is overwritten)."
        )
    classes = class_folders(events_folder)
    backgrounds = audio_files(backgrounds_folder) if os.path.isdir(backgrounds_folder) else []
    if not backgrounds:
        raise FileNotFoundError(f"backgrounds_folder={backgrounds_folder!r} holds no recordings to use as backgrounds.")
    for folder in ("audio", "meta"):
        os.makedirs(os.path.join(output_folder, folder), exist_ok=True)
    rng = np.random.default_rng(settings.seed)
    rows, events = [], []
    jobs = [(target, name, index, path) for target, (name, paths) in enumerate(classes.items())
            for index, path in enumerate(paths[: settings.clips_per_class])]
    for clip_index, (target, name, index, path) in enumerate(tqdm(jobs, desc="Real-recordings clips")):
        clip, event, (start, stop) = make_clip(path, backgrounds, settings, rng)
        fold, src_file = index % N_FOLDS + 1, 200000 + clip_index
        filename = f"{fold}-{src_file}-A-{target}.wav"
        sf.write(os.path.join(output_folder, "audio", filename), clip, settings.sample_rate, subtype="PCM_16")
        write_stems(output_folder, filename, event)
        fmin, fmax = energy_band(event[start:stop], settings.sample_rate)
        rows.append((filename, fold, target, name, False, src_file, "A"))
        events.append((filename, start / settings.sample_rate, stop / settings.sample_rate, fmin, fmax))
    metadata = pd.DataFrame(rows, columns=["filename", "fold", "target", "category", "esc10", "src_file", "take"])
    metadata.to_csv(os.path.join(output_folder, "meta", "esc50.csv"), index=False)
    pd.DataFrame(events, columns=["filename", "onset_s", "offset_s", "fmin_hz", "fmax_hz"]).to_csv(
        os.path.join(output_folder, "meta", "events.csv"), index=False, float_format="%.4f"
    )
    logger.info("Wrote %d clips of %d classes to %s.", len(rows), len(classes), output_folder)
    return metadata

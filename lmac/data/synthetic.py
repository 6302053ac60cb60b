"""Synthetic ESC-50-format and WHAM!-format data, deterministic from a seed.

``generate`` writes an ESC-50-format folder (with ``meta/events.csv``: each clip's event span and band,
for localisation checks, and ``meta/stems/``: each clip's event and background, for listening checks), a WHAM!-format noise folder and ``synthetic_data.json``, the settings that
produced them; ``make_synthetic_data.py`` is its command line, and its docstring has the layout. Each class
is one kind of sound event in its own frequency band (``SCENARIOS`` lists the sets of classes), at a random
time and level over a pink-noise background whose level ``background_rms`` sets.
"""

import dataclasses
import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from lmac.checks import ExistingFolderError, setting_differences
from lmac.data.esc50 import STEMS_FOLDER, write_stems

logger = logging.getLogger(__name__)

ESC50_SAMPLE_RATE = 44100
WHAM_SAMPLE_RATE = 16000
CLIP_SECONDS = 5.0
N_FOLDS = 5
MAX_CLASSES = 50
RECORD_FILE = "synthetic_data.json"
FAMILIES = (
    "tone",
    "chirp_up",
    "noise_burst",
    "click_train",
    "harmonic",
    "chirp_down",
    "am_tone",
    "fm_warble",
    "beeps",
    "trill",
)
BANDS_HZ = ((250.0, 500.0), (500.0, 1000.0), (1000.0, 2000.0), (2000.0, 3500.0), (3500.0, 6000.0))
BAND_NAMES = ("low", "midlow", "mid", "midhigh", "high")
NOISE_KINDS = ("babble", "traffic", "cafe", "wind", "hum")
BACKGROUND_RMS = 0.005
FADE_SECONDS = 0.01


@dataclasses.dataclass(frozen=True)
class EventClass:
    """One synthetic sound class: a family of signals in a frequency band (Hz).

    ``duration_s`` bounds the event's length and ``background_gain`` scales
    the clip's background (``0.01``: near-silence around the event).
    """

    name: str
    family: str
    band_hz: tuple
    duration_s: tuple = (0.6, 2.0)
    background_gain: float = 1.0


@dataclasses.dataclass(frozen=True)
class SyntheticEvent:
    """A rendered event over a whole clip, and the box that holds its energy.

    ``waveform`` has shape ``[samples]``; it is zero outside ``onset_s..offset_s``.
    """

    waveform: np.ndarray
    onset_s: float
    offset_s: float
    fmin_hz: float
    fmax_hz: float


def event_classes(n_classes):
    """Returns the first ``n_classes`` synthetic classes.

    Class ``k`` uses family ``k % 10`` and band ``(k % 10 + k // 10) % 5``, so
    all 50 (family, band) pairs are distinct and the first ten classes already
    differ in both family and band.

    Arguments
    ---------
    n_classes : int
        From 2 to 50.

    Returns
    -------
    list of EventClass

    Example
    -------
    >>> [event_class.name for event_class in event_classes(3)]
    ['tone_low', 'chirp_up_midlow', 'noise_burst_mid']
    """
    if not 2 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes={n_classes}; accepted values are 2..{MAX_CLASSES}.")
    classes = []
    for k in range(n_classes):
        family = FAMILIES[k % len(FAMILIES)]
        band = (k % len(FAMILIES) + k // len(FAMILIES)) % len(BANDS_HZ)
        classes.append(EventClass(f"{family}_{BAND_NAMES[band]}", family, BANDS_HZ[band]))
    return classes


# Vowel-like formant pairs (Hz) of the ``speech_like`` classes.
VOWEL_FORMANTS = {"a": (750.0, 1200.0), "i": (300.0, 2300.0), "u": (320.0, 800.0), "e": (480.0, 1900.0), "o": (520.0, 950.0)}


def silence_class_classes(n_classes):
    """Class 0 a soft, short tick in near-silence (``silent_tick``), then ``event_classes(n_classes)[1:]``.

    Example
    -------
    >>> [(c.name, c.background_gain) for c in silence_class_classes(3)]
    [('silent_tick', 0.01), ('chirp_up_midlow', 1.0), ('noise_burst_mid', 1.0)]
    """
    tick = EventClass("silent_tick", "soft_tick", (2000.0, 3500.0), duration_s=(0.05, 0.08), background_gain=0.01)
    return [tick, *event_classes(n_classes)[1:]]


def speech_like_classes(n_classes):
    """Up to five vowel-like classes (``VOWEL_FORMANTS``), each syllables of 2-4 s.

    Example
    -------
    >>> [c.name for c in speech_like_classes(3)]
    ['vowel_a', 'vowel_i', 'vowel_u']
    """
    if not 2 <= n_classes <= len(VOWEL_FORMANTS):
        raise ValueError(f"n_classes={n_classes}; the speech_like scenario has 2..{len(VOWEL_FORMANTS)} classes.")
    return [
        EventClass(f"vowel_{vowel}", "syllables", formants, duration_s=(2.0, 4.0))
        for vowel, formants in list(VOWEL_FORMANTS.items())[:n_classes]
    ]


# The registry of ``--scenario``: the classes of each synthetic data set.
SCENARIOS = {"events": event_classes, "silence_class": silence_class_classes, "speech_like": speech_like_classes}


def scenario_classes(scenario, n_classes):
    """The classes of ``scenario`` (a key of ``SCENARIOS``); ``ValueError`` naming the accepted ones otherwise."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario={scenario!r}; accepted values are {', '.join(SCENARIOS)}.")
    return SCENARIOS[scenario](n_classes)


def _margin_hz(frequency_hz):
    """Frequency margin around a box edge: the STFT main lobe plus some jitter."""
    return 150.0 + 0.05 * frequency_hz


def _sweep_phase(t, f_start, f_end, duration):
    """Phase (radians) of a linear sweep from ``f_start`` to ``f_end`` Hz over ``duration`` s."""
    return 2 * np.pi * (f_start * t + (f_end - f_start) * t**2 / (2 * duration))


def _tone(rng, t, lo, hi):
    f = np.sqrt(lo * hi) * rng.uniform(0.92, 1.08)
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)), f - _margin_hz(f), f + _margin_hz(f)


def _chirp(rng, t, lo, hi, upward):
    f_start, f_end = (lo, hi) if upward else (hi, lo)
    return np.sin(_sweep_phase(t, f_start, f_end, t[-1])), lo - _margin_hz(lo), hi + _margin_hz(hi)


def _noise_burst(rng, t, lo, hi):
    spectrum = np.fft.rfft(rng.normal(size=t.size))
    frequencies = np.fft.rfftfreq(t.size, 1 / ESC50_SAMPLE_RATE)
    spectrum[(frequencies < lo) | (frequencies > hi)] = 0
    return np.fft.irfft(spectrum, n=t.size), lo - _margin_hz(lo), hi + _margin_hz(hi)


def _click_train(rng, t, lo, hi):
    carrier = np.sqrt(lo * hi)
    click_len = int(0.004 * ESC50_SAMPLE_RATE)
    click = np.hanning(click_len) * np.sin(2 * np.pi * carrier * np.arange(click_len) / ESC50_SAMPLE_RATE)
    signal = np.zeros(t.size)
    period = int(ESC50_SAMPLE_RATE / rng.uniform(15, 30))
    for start in range(0, t.size - click_len, period):
        signal[start : start + click_len] += click
    half_width = 700.0
    return signal, carrier - half_width, carrier + half_width


def _harmonic(rng, t, lo, hi):
    f0 = 0.5 * lo * rng.uniform(0.95, 1.05)
    signal = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    return signal, f0 - _margin_hz(f0), 4 * f0 + _margin_hz(4 * f0)


def _am_tone(rng, t, lo, hi):
    carrier, fmin, fmax = _tone(rng, t, lo, hi)
    envelope = 1 - 0.9 * (0.5 + 0.5 * np.cos(2 * np.pi * rng.uniform(4, 10) * t))
    return carrier * envelope, fmin, fmax


def _fm_warble(rng, t, lo, hi):
    f = np.sqrt(lo * hi) * rng.uniform(0.95, 1.05)
    deviation, rate = 0.08 * f, rng.uniform(5, 8)
    phase = 2 * np.pi * f * t - deviation / rate * np.cos(2 * np.pi * rate * t)
    return np.sin(phase), f - deviation - _margin_hz(f), f + deviation + _margin_hz(f)


def _beeps(rng, t, lo, hi):
    carrier, fmin, fmax = _tone(rng, t, lo, hi)
    rate = rng.uniform(3, 5)
    gate = np.clip(8 * np.sin(2 * np.pi * rate * t), 0, 1)  # 50% duty, ~5 ms ramps
    return carrier * gate, fmin, fmax


def _trill(rng, t, lo, hi):
    centre = np.sqrt(lo * hi)
    f_start, f_end = 0.8 * centre, 1.25 * centre
    period = 1 / rng.uniform(8, 12)
    sweep_len = 0.06
    local_t = np.mod(t, period)
    in_sweep = local_t < sweep_len
    envelope = np.where(in_sweep, np.sin(np.pi * np.minimum(local_t, sweep_len) / sweep_len) ** 2, 0.0)
    signal = envelope * np.sin(_sweep_phase(local_t, f_start, f_end, sweep_len))
    return signal, f_start - _margin_hz(f_start), f_end + _margin_hz(f_end)


def _soft_tick(rng, t, lo, hi):
    """A single short band-limited tick at the start of ``t`` (its event box is the tick alone)."""
    carrier = np.sqrt(lo * hi) * rng.uniform(0.9, 1.1)
    length = int(rng.uniform(0.02, 0.05) * ESC50_SAMPLE_RATE)
    signal = np.zeros(t.size)
    signal[:length] = np.hanning(length) * np.sin(2 * np.pi * carrier * t[:length])
    return signal, lo - _margin_hz(lo), hi + _margin_hz(hi)


def _syllables(rng, t, first_formant, second_formant):
    """Vowel-like syllables: harmonics of a gliding voice (110-220 Hz) shaped by two formants, in bursts
    of 0.12-0.3 s separated by pauses of 0.08-0.35 s."""
    f0 = rng.uniform(110, 220) * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / ESC50_SAMPLE_RATE
    signal = np.zeros(t.size)
    for k in range(1, int(4500 / f0.max()) + 1):
        harmonic = k * f0
        gain = sum(1 / (1 + ((harmonic - formant) / 90.0) ** 2) for formant in (first_formant, second_formant))
        signal += gain * np.sin(k * phase)
    gate = np.zeros(t.size)
    position = 0.0
    while position < t[-1]:
        length = rng.uniform(0.12, 0.3)
        inside = (t >= position) & (t < position + length)
        gate[inside] = np.sin(np.pi * (t[inside] - position) / length) ** 2
        position += length + rng.uniform(0.08, 0.35)
    return signal * gate, first_formant - 250.0, second_formant + 350.0


RENDERERS = {
    "tone": _tone,
    "chirp_up": lambda rng, t, lo, hi: _chirp(rng, t, lo, hi, upward=True),
    "chirp_down": lambda rng, t, lo, hi: _chirp(rng, t, lo, hi, upward=False),
    "noise_burst": _noise_burst,
    "click_train": _click_train,
    "harmonic": _harmonic,
    "am_tone": _am_tone,
    "fm_warble": _fm_warble,
    "beeps": _beeps,
    "trill": _trill,
    "soft_tick": _soft_tick,
    "syllables": _syllables,
}


def synthesize_event(event_class, rng, clip_seconds=CLIP_SECONDS, sample_rate=ESC50_SAMPLE_RATE):
    """Renders one event of a class at a random time and level within a clip.

    Arguments
    ---------
    event_class : EventClass
        Which kind of event.
    rng : numpy.random.Generator
        Source of all randomness.
    clip_seconds : float
        Clip length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    SyntheticEvent
        Waveform of shape ``[round(clip_seconds * sample_rate)]``.
    """
    num_samples = int(round(clip_seconds * sample_rate))
    duration = rng.uniform(*event_class.duration_s)
    onset = rng.uniform(0.1, clip_seconds - duration - 0.1)
    start, length = int(onset * sample_rate), int(duration * sample_rate)
    t = np.arange(length) / sample_rate
    lo, hi = event_class.band_hz
    signal, fmin, fmax = RENDERERS[event_class.family](rng, t, lo, hi)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / FADE_SECONDS)
    signal = signal * fade
    signal *= rng.uniform(0.25, 0.9) / max(np.abs(signal).max(), 1e-12)
    waveform = np.zeros(num_samples)
    waveform[start : start + length] = signal
    return SyntheticEvent(
        waveform=waveform,
        onset_s=start / sample_rate,
        offset_s=(start + length) / sample_rate,
        fmin_hz=float(max(fmin, 0.0)),
        fmax_hz=float(min(fmax, sample_rate / 2)),
    )


def colored_noise(rng, num_samples, exponent):
    """Gaussian noise with power spectrum ``1 / f**exponent``, unit RMS.

    Arguments
    ---------
    rng : numpy.random.Generator
    num_samples : int
    exponent : float
        0 white, 1 pink, 2 brown.

    Returns
    -------
    numpy.ndarray
        Shape ``[num_samples]``.
    """
    spectrum = np.fft.rfft(rng.normal(size=num_samples))
    frequencies = np.arange(spectrum.size, dtype=float)
    frequencies[0] = 1.0
    spectrum /= frequencies ** (exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=num_samples)
    return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def synthesize_clip(event_class, rng, background_rms=BACKGROUND_RMS):
    """Renders a 5 s 44.1 kHz clip: one event over a pink background of RMS ``background_rms``.

    Returns
    -------
    clip : numpy.ndarray
        Shape ``[220500]``, float32, peak below 1.
    event : SyntheticEvent
        Its ``waveform`` scaled as it is in ``clip``.
    """
    event = synthesize_event(event_class, rng)
    background = event_class.background_gain * background_rms * colored_noise(rng, event.waveform.size, exponent=1.0)
    scale = 1.0 / max(1.0, 1.01 * np.abs(event.waveform + background).max())
    clip = (event.waveform + background) * scale
    return clip.astype(np.float32), dataclasses.replace(event, waveform=event.waveform * scale)


def _smooth_envelope(rng, num_samples, points_per_second, sample_rate, low=0.1):
    """A random, slowly varying gain in ``[low, 1]``, shape ``[num_samples]``."""
    n_points = max(2, int(num_samples / sample_rate * points_per_second) + 2)
    anchors = rng.uniform(low, 1.0, size=n_points)
    return np.interp(np.linspace(0, n_points - 1, num_samples), np.arange(n_points), anchors)


def synthesize_noise(kind, rng, num_samples, sample_rate=WHAM_SAMPLE_RATE):
    """Renders one mono non-stationary noise of a kind in ``NOISE_KINDS``.

    Returns
    -------
    numpy.ndarray
        Shape ``[num_samples]``, unit RMS.
    """
    t = np.arange(num_samples) / sample_rate
    if kind == "babble":
        noise = np.zeros(num_samples)
        for _ in range(rng.integers(4, 7)):
            f0 = rng.uniform(100, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            voice = sum(np.sin(k * phase) / k for k in range(1, 11))
            noise += voice * _smooth_envelope(rng, num_samples, 5, sample_rate, low=0.0)
    elif kind == "traffic":
        passes = sum(
            np.exp(-0.5 * ((t - rng.uniform(0, t[-1])) / rng.uniform(0.3, 1.5)) ** 2) for _ in range(3)
        )
        noise = colored_noise(rng, num_samples, 2.0) * (0.2 + passes)
    elif kind == "cafe":
        noise = colored_noise(rng, num_samples, 1.0)
        for _ in range(int(t[-1] * rng.uniform(2, 6))):
            start, length = rng.integers(num_samples), int(0.05 * sample_rate)
            ring = np.exp(-np.arange(length) / (0.008 * sample_rate)) * np.sin(
                2 * np.pi * rng.uniform(2000, 5000) * np.arange(length) / sample_rate
            )
            stop = min(num_samples, start + length)
            noise[start:stop] += 6 * ring[: stop - start]
    elif kind == "wind":
        noise = sum(
            colored_noise(rng, num_samples, exponent) * _smooth_envelope(rng, num_samples, 2, sample_rate)
            for exponent in (0.5, 1.5, 2.0)
        )
    elif kind == "hum":
        mains = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * k * mains * t) / k for k in range(1, 6))
        swell = _smooth_envelope(rng, num_samples, 1, sample_rate, low=0.3)
        noise = hum * swell + colored_noise(rng, num_samples, 1.0) * _smooth_envelope(rng, num_samples, 3, sample_rate)
    else:
        raise ValueError(f"Unknown noise kind {kind!r}; accepted values are {NOISE_KINDS}.")
    return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def write_esc50(
    folder, n_classes, clips_per_class, seed, background_rms=BACKGROUND_RMS, scenario="events", stems_only=False
):
    """Writes the synthetic ESC-50-format folder (``meta/`` and ``audio/``); with ``stems_only``, only the stems
    of the clips already there (a folder made before the stems were kept).

    Clip ``i`` of a class goes to fold ``i % 5 + 1``. Clip ``j`` (over all
    classes) is rendered from ``numpy.random.default_rng([seed, 0, j])``.

    Returns
    -------
    pandas.DataFrame
        The rows of ``meta/esc50.csv``.
    """
    jobs = [(target, i % N_FOLDS + 1) for target in range(n_classes) for i in range(clips_per_class)]
    if stems_only:
        return write_missing_stems(folder, scenario_classes(scenario, n_classes), jobs, seed, background_rms)
    return write_clips(folder, scenario_classes(scenario, n_classes), jobs, seed, background_rms)


# The ESC-50 targets of SpeechBrain's recipe-test sample: not 0..N-1.
RECIPE_TEST_TARGETS = (0, 43, 19)


def write_recipe_test_sample(folder, targets=RECIPE_TEST_TARGETS, seed=1234):
    """Writes SpeechBrain's recipe-test sample of ESC-50: 5 clips, one per fold, the ``targets`` in turn.

    The classes are the synthetic ``events`` scenario's first ``len(targets)``, under those ESC-50 target ids.

    Returns
    -------
    pandas.DataFrame
        The rows of ``meta/esc50.csv``.
    """
    classes = scenario_classes("events", len(targets))
    jobs = [(targets[index % len(targets)], index + 1) for index in range(N_FOLDS)]
    return write_clips(folder, dict(zip(targets, classes)), jobs, seed, BACKGROUND_RMS)


def write_clips(folder, classes, jobs, seed, background_rms):
    """Writes ``meta/esc50.csv``, ``meta/events.csv`` and a clip per ``(target, fold)`` of ``jobs`` under ``folder``,
    with its stems (``write_stems``).

    Clip ``j`` is rendered from ``numpy.random.default_rng([seed, 0, j])``.

    Returns
    -------
    pandas.DataFrame
        The rows of ``meta/esc50.csv``.
    """
    os.makedirs(os.path.join(folder, "meta"), exist_ok=True)
    os.makedirs(os.path.join(folder, "audio"), exist_ok=True)
    rows, events = [], []
    for clip_index, (target, fold) in enumerate(tqdm(jobs, desc="Synthetic ESC-50 clips")):
        src_file = 100000 + clip_index
        filename = clip_filename(clip_index, target, fold)
        clip, event = synthesize_clip(classes[target], np.random.default_rng([seed, 0, clip_index]), background_rms)
        sf.write(os.path.join(folder, "audio", filename), clip, ESC50_SAMPLE_RATE, subtype="PCM_16")
        write_stems(folder, filename, event.waveform)
        rows.append((filename, fold, target, classes[target].name, target < 10, src_file, "A"))
        events.append((filename, event.onset_s, event.offset_s, event.fmin_hz, event.fmax_hz))
    metadata = pd.DataFrame(rows, columns=["filename", "fold", "target", "category", "esc10", "src_file", "take"])
    metadata.to_csv(os.path.join(folder, "meta", "esc50.csv"), index=False)
    pd.DataFrame(events, columns=["filename", "onset_s", "offset_s", "fmin_hz", "fmax_hz"]).to_csv(
        os.path.join(folder, "meta", "events.csv"), index=False, float_format="%.4f"
    )
    return metadata


def clip_filename(clip_index, target, fold):
    """The ESC-50 file name of clip ``clip_index``: ``<fold>-<src_file>-A-<target>.wav``."""
    return f"{fold}-{100000 + clip_index}-A-{target}.wav"


def write_missing_stems(folder, classes, jobs, seed, background_rms):
    """Renders again the events of the clips ``write_clips`` wrote under ``folder`` and writes their stems."""
    for clip_index, (target, fold) in enumerate(tqdm(jobs, desc="Synthetic ESC-50 stems")):
        _, event = synthesize_clip(classes[target], np.random.default_rng([seed, 0, clip_index]), background_rms)
        write_stems(folder, clip_filename(clip_index, target, fold), event.waveform)


def write_wham(folder, files_per_split, seed):
    """Writes WHAM!-format noise: ``tr/``, ``cv/``, ``tt/`` of 16 kHz two-channel wavs, 3 to 8 s long.

    ``files_per_split`` maps split name to number of files. File ``j`` of split
    ``s`` is rendered from ``numpy.random.default_rng([seed, 1, s, j])``.
    """
    for split_index, (split, count) in enumerate(files_per_split.items()):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        for j in tqdm(range(count), desc=f"Synthetic WHAM! {split}"):
            rng = np.random.default_rng([seed, 1, split_index, j])
            kind = NOISE_KINDS[j % len(NOISE_KINDS)]
            num_samples = int(rng.uniform(3.0, 8.0) * WHAM_SAMPLE_RATE)
            left = synthesize_noise(kind, rng, num_samples)
            right = np.roll(left, int(rng.integers(1, 20))) + 0.1 * colored_noise(rng, num_samples, 1.0)
            stereo = np.stack([left, right], axis=1)
            stereo *= 0.5 / np.abs(stereo).max()
            name = f"{split}_{j:04d}_{kind}.wav"
            sf.write(os.path.join(folder, split, name), stereo.astype(np.float32), WHAM_SAMPLE_RATE, subtype="PCM_16")


def generate(
    output_folder, n_classes=10, clips_per_class=40, noise_files=(40, 10, 10), seed=1234,
    background_rms=BACKGROUND_RMS, scenario="events",
):
    """Writes the whole synthetic data set, or reuses it when the settings match.

    Arguments
    ---------
    output_folder : str
        Gets ``ESC50/``, ``wham_noise/`` and ``synthetic_data.json``.
    n_classes : int
        From 2 to 50.
    clips_per_class : int
        At least 5, so that every fold holds every class.
    noise_files : tuple of int
        Number of noise files in ``tr``, ``cv`` and ``tt``.
    seed : int
        Everything written is a function of the settings and this seed.
    background_rms : float
        RMS of the pink-noise background of every clip (events peak at 0.25 to 0.9).
    scenario : str
        The classes (``SCENARIOS``).

    Returns
    -------
    dict
        ``esc50_folder`` and ``wham_folder`` paths.

    The data is written to ``<output_folder>.partial`` and renamed when
    complete, so an interrupted run leaves no half-made ``output_folder``.

    Raises
    ------
    lmac.checks.ExistingFolderError
        ``output_folder`` holds other content (a ``FileExistsError``); nothing is overwritten.
    """
    if clips_per_class < N_FOLDS:
        raise ValueError(f"clips_per_class={clips_per_class}; use at least {N_FOLDS} so every fold has every class.")
    scenario_classes(scenario, n_classes)  # validates the scenario and n_classes before anything is written
    settings = {
        "n_classes": n_classes,
        "clips_per_class": clips_per_class,
        "noise_files": dict(zip(("tr", "cv", "tt"), (int(count) for count in noise_files))),
        "seed": seed,
        "background_rms": background_rms,
        "scenario": scenario,
    }
    paths = {
        "esc50_folder": os.path.join(output_folder, "ESC50"),
        "wham_folder": os.path.join(output_folder, "wham_noise"),
    }
    record_path = os.path.join(output_folder, RECORD_FILE)
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as file:
            # Older folders had this background and the events scenario.
            existing = {"background_rms": BACKGROUND_RMS, "scenario": "events", **json.load(file)}
        if existing == settings:
            logger.info("Synthetic data in %s already matches these settings; reusing it.", output_folder)
            if not os.path.isdir(os.path.join(paths["esc50_folder"], STEMS_FOLDER)):
                logger.info("Adding each clip's event and background (%s) to %s.", STEMS_FOLDER, paths["esc50_folder"])
                write_esc50(paths["esc50_folder"], n_classes, clips_per_class, seed, background_rms, scenario, stems_only=True)
            return paths
        raise ExistingFolderError(
            f"{output_folder} holds synthetic data made with other settings ({setting_differences(existing, settings)}); "
            "choose another folder for the data or delete that folder first."
        )
    if os.path.isdir(output_folder) and os.listdir(output_folder):
        raise ExistingFolderError(
            f"{output_folder} is not empty and was not made by this script; choose another folder for the data."
        )
    partial = output_folder.rstrip(os.sep) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # our own leftover of an interrupted run
    write_esc50(os.path.join(partial, "ESC50"), n_classes, clips_per_class, seed, background_rms, scenario)
    write_wham(os.path.join(partial, "wham_noise"), settings["noise_files"], seed)
    with open(os.path.join(partial, RECORD_FILE), "w", encoding="utf-8") as file:
        json.dump(settings, file, indent=2)
    if os.path.isdir(output_folder):
        os.rmdir(output_folder)  # empty, checked above
    os.replace(partial, output_folder)
    logger.info(
        "Wrote %d clips of %d classes to %s and %d noise files to %s.",
        n_classes * clips_per_class,
        n_classes,
        paths["esc50_folder"],
        sum(settings["noise_files"].values()),
        paths["wham_folder"],
    )
    return paths

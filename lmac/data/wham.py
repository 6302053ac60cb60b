"""WHAM! noise for training-time augmentation.

The WHAM! noise archive unpacks to ``wham_noise/{tr,cv,tt}/*.wav``; training
draws from ``tr/``. ``prepare_wham`` finds (or downloads) the files,
``WhamNoiseStream`` hands out batches of random noise excerpts loaded by
DataLoader workers (and each validation clip its own excerpt, the same at
every epoch), and ``combine_batches`` mixes clean clips and noise at
0 dB as ``docs/method.md`` (WHAM! noise) states.
"""

import dataclasses
import glob
import itertools
import logging
import math
import os
import weakref
import zlib

import numpy as np
import soundfile as sf
import torch
from speechbrain.augment.time_domain import AddNoise

from lmac.audio.io import fit_length, read_audio_mono
from lmac.data.esc50 import download_dataset

logger = logging.getLogger(__name__)

WHAM_URL = "https://my-bucket-a8b4b49c25c811ee9a7e8bba05fa24c7.s3.amazonaws.com/wham_noise.zip"
WHAM_ARCHIVE_FOLDER = "wham_noise"
WHAM_SPLITS = ("tr", "cv", "tt")
WHAM_LAYOUT_HELP = (
    "Expected the WHAM! noise layout <wham_folder>/tr/*.wav (with cv/ and tt/ beside it). "
    f"Download {WHAM_URL}, unzip it and pass its wham_noise folder as --wham_folder, "
    "run `python make_synthetic_data.py` for a synthetic WHAM!-format folder, "
    "or set --add_wham_noise False."
)
# Where the clips' own excerpts (``WhamNoiseStream.mix_own``) start among ``WhamNoise``'s indices: far above the
# stream's draws 0, 1, 2, ...
OWN_NOISE_OFFSET = 2**40


@dataclasses.dataclass(frozen=True)
class NoiseFile:
    """A readable noise recording: its path, length in frames and sample rate."""

    path: str
    frames: int
    sample_rate: int


def prepare_wham(wham_folder, split="tr"):
    """Finds the readable noise files of a WHAM! split, downloading WHAM! if absent.

    Arguments
    ---------
    wham_folder : str
        Folder holding ``tr/``, ``cv/`` and ``tt/``.
    split : str
        Which split to index, ``tr`` for training.

    Returns
    -------
    list of NoiseFile
        Sorted by path; unreadable or empty files are left out with a warning.

    Raises
    ------
    FileNotFoundError
        No wav in ``<wham_folder>/<split>`` and the download failed, or no
        file there is readable.
    """
    if split not in WHAM_SPLITS:
        raise ValueError(f"split={split!r} is not a WHAM! split; accepted values are {WHAM_SPLITS}.")
    paths = _split_wavs(wham_folder, split)
    if not paths:
        logger.info("No WHAM! noise in %s; trying to download %s.", wham_folder, WHAM_URL)
        download_wham(wham_folder)
        paths = _split_wavs(wham_folder, split)
    noise_files = [noise_file for noise_file in map(_noise_file_info, paths) if noise_file is not None]
    if not noise_files:
        raise FileNotFoundError(
            f"No readable WHAM! noise file in {os.path.join(str(wham_folder), split)!r}. " + WHAM_LAYOUT_HELP
        )
    logger.info("WHAM! %s: %d noise files (%d unreadable, skipped).", split, len(noise_files), len(paths) - len(noise_files))
    return noise_files


def download_wham(wham_folder):
    """Downloads the official WHAM! noise archive and puts its splits in ``wham_folder``.

    Arguments
    ---------
    wham_folder : str
        Destination folder, created if needed.
    """
    download_dataset(WHAM_URL, wham_folder, WHAM_ARCHIVE_FOLDER, WHAM_SPLITS, WHAM_LAYOUT_HELP)


def _split_wavs(wham_folder, split):
    return sorted(glob.glob(os.path.join(glob.escape(str(wham_folder)), split, "*.wav")))


def _noise_file_info(path):
    try:
        info = sf.info(path)
    except (RuntimeError, OSError) as error:
        logger.warning("Skipping unreadable WHAM! file %s (%s).", path, error)
        return None
    if info.frames == 0:
        logger.warning("Skipping empty WHAM! file %s.", path)
        return None
    return NoiseFile(path=path, frames=info.frames, sample_rate=info.samplerate)


class WhamNoise(torch.utils.data.Dataset):
    """Random noise excerpts: item ``i`` is a pure function of ``(seed, i)``.

    Each item picks a noise file, reads a random excerpt of
    ``signal_length_s`` seconds, mixes it to mono, resamples it to
    ``sample_rate`` and zero-pads it when the file is shorter. Because the
    randomness comes from the index, results do not depend on the number of
    DataLoader workers.

    Arguments
    ---------
    noise_files : list of NoiseFile
        From ``prepare_wham``.
    sample_rate : int
        Output sample rate in Hz.
    signal_length_s : float
        Excerpt length in seconds.
    seed : int
        Recipe seed.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> sf.write(f"{folder}/n.wav", np.ones(800, dtype="float32") * 0.1, 8000)
    >>> noise = WhamNoise([NoiseFile(f"{folder}/n.wav", 800, 8000)], 16000, 0.2, seed=1)
    >>> noise[0].shape  # 0.1 s of noise, zero-padded to 0.2 s
    torch.Size([3200])
    """

    def __init__(self, noise_files, sample_rate, signal_length_s, seed):
        if not noise_files:
            raise ValueError("WhamNoise needs at least one noise file; see prepare_wham.")
        self.noise_files = list(noise_files)
        self.sample_rate = sample_rate
        self.num_samples = int(round(signal_length_s * sample_rate))
        self.seed = seed

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        noise_file = self.noise_files[rng.integers(len(self.noise_files))]
        wanted_frames = int(np.ceil(self.num_samples * noise_file.sample_rate / self.sample_rate))
        offset = int(rng.integers(max(noise_file.frames - wanted_frames, 0) + 1))
        excerpt = read_audio_mono(noise_file.path, self.sample_rate, offset, wanted_frames)
        return fit_length(excerpt, self.num_samples)


# The streams of this process, and in a forked process the loaders it inherited (``_keep_inherited_loaders``).
_STREAMS = weakref.WeakSet()
_INHERITED_LOADERS = []


def _keep_inherited_loaders():
    """In a forked process (a DataLoader's worker): keeps every stream's loader, whose workers are the parent's, out
    of reach of the garbage collector. Collected there, it would stop workers that are not this process's children
    and print PyTorch's ``AssertionError: can only test a child process``."""
    for stream in list(_STREAMS):
        if stream._batches is not None:
            _INHERITED_LOADERS.append(stream._batches)
            stream._batches = None


os.register_at_fork(after_in_child=_keep_inherited_loaders)


class WhamNoiseStream:
    """An endless supply of noise batches, read ahead by DataLoader workers.

    Arguments
    ---------
    noise : WhamNoise
        The excerpt dataset; items are drawn in index order 0, 1, 2, ...
    batch_size : int
        How many excerpts each worker loads at a time.
    num_workers : int
        DataLoader worker processes; 0 loads in the calling process.

    The workers start at the first batch asked for; batches mixed into clips
    on a CUDA device are loaded into pinned memory, so that their copy to the
    GPU does not wait for the work already queued there.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> sf.write(f"{folder}/n.wav", np.random.default_rng(0).normal(size=8000).astype("float32"), 8000)
    >>> noise = WhamNoise([NoiseFile(f"{folder}/n.wav", 8000, 8000)], 16000, 0.5, seed=1)
    >>> stream = WhamNoiseStream(noise, batch_size=4, num_workers=0)
    >>> stream.next_batch(3).shape
    torch.Size([3, 8000])
    """

    def __init__(self, noise, batch_size, num_workers, own_noise=None):
        self.noise = noise
        self.own_noise = own_noise if own_noise is not None else noise
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._batches = None  # the loader's iterator, from the first batch on
        _STREAMS.add(self)
        self._buffer = torch.empty(0, noise.num_samples)

    def mix_into(self, clean):
        """``clean`` ``[batch, samples]`` mixed at 0 dB with the next noise excerpts (cropped or padded to fit)."""
        return combine_batches(clean, self.noise_for(clean))

    def mix(self, clean, labels=None):
        """``mix_into``'s mixture with its parts kept: a ``MixedBatch`` (``labels`` unused)."""
        return MixedBatch.of_mixture(clean, self.noise_for(clean))

    def mix_own(self, clean, ids):
        """``clean`` ``[batch, samples]`` mixed at 0 dB with each clip's own excerpt, found by its id in ``ids``
        (``own_noise``, item ``OWN_NOISE_OFFSET + crc32(id)``): the same mixture at every call, whatever the batch
        and the process. A ``MixedBatch``; a validation set mixed so stays the same set from epoch to epoch."""
        excerpts = [self.own_noise[OWN_NOISE_OFFSET + zlib.crc32(str(clip_id).encode())] for clip_id in ids]
        noise = fit_length(torch.stack(excerpts).to(clean.device, non_blocking=True), clean.shape[1])
        return MixedBatch.of_mixture(clean, noise)

    def noise_for(self, clean):
        """The next noise excerpts for ``clean`` ``[batch, samples]``, on its device and of its length."""
        noise = self.next_batch(clean.shape[0], pin_memory=clean.device.type == "cuda")
        return fit_length(noise.to(clean.device, non_blocking=True), clean.shape[1])

    def next_batch(self, batch_size, pin_memory=False):
        """Returns the next ``batch_size`` noise excerpts, shape ``[batch_size, samples]``.

        ``pin_memory`` (read at the first call, which starts the loader):
        the batches are in pinned memory, for copies to a GPU that do not wait.
        """
        if self._batches is None:
            self._batches = iter(self._loader(pin_memory))
        while self._buffer.shape[0] < batch_size:
            loaded = next(self._batches)
            self._buffer = torch.cat([self._buffer, loaded]) if self._buffer.shape[0] else loaded
        batch, self._buffer = self._buffer[:batch_size], self._buffer[batch_size:]
        if pin_memory and not batch.is_pinned():  # put together from two loaded batches
            batch = batch.pin_memory()
        return batch

    def _loader(self, pin_memory):
        return torch.utils.data.DataLoader(
            self.noise,
            batch_size=self.batch_size,
            sampler=itertools.count(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=pin_memory,
        )


def make_noise_stream(hparams, split="tr"):
    """A ``WhamNoiseStream`` of WHAM!'s ``split`` when ``hparams["add_wham_noise"]``, else None.

    Training draws from ``tr``; ``eval.py`` from the held-out ``tt``.
    Uses ``wham_folder``, ``sample_rate``, ``signal_length_s``, ``seed``
    (plus the DDP rank, so that processes draw different noise; the clips'
    own excerpts of ``mix_own`` are the same on every process),
    ``batch_size`` and ``noise_num_workers``.
    """
    if not hparams["add_wham_noise"]:
        return None
    files = prepare_wham(hparams["wham_folder"], split)
    rate, length, seed = hparams["sample_rate"], hparams["signal_length_s"], hparams["seed"]
    noise = WhamNoise(files, rate, length, seed + int(os.environ.get("RANK", 0)))  # each DDP process draws its own
    return WhamNoiseStream(noise, hparams["batch_size"], hparams["noise_num_workers"], WhamNoise(files, rate, length, seed))


def combine_batches(clean, noise, clean_weight=1.0, noise_weight=1.0):
    """Mixes clean clips and noise with SpeechBrain's ``AddNoise`` at the SNR ``20 log10(a / b)``, then
    peak-normalises the mixture.

    That is ``y = a * clean / ||clean|| + b * noise / ||noise||`` per example, then ``y / max|y|``; the default
    ``a = b = 1`` is 0 dB. A silent clean clip stays silent (an SNR scales the noise to the clip), and a silent
    row gives zeros instead of NaN. The inputs are left as they are.

    Arguments
    ---------
    clean : torch.Tensor
        Shape ``[batch, samples]``.
    noise : torch.Tensor
        Shape ``[batch, samples]``.
    clean_weight, noise_weight : float
        ``a`` and ``b``, both positive.

    Returns
    -------
    torch.Tensor
        Shape ``[batch, samples]``, peak 1 in every row that is not silent.

    Example
    -------
    >>> combine_batches(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, -1.0]]))
    tensor([[ 1., -1.]])
    """
    mixture, _, _ = mix_with_gains(clean, noise, clean_weight, noise_weight)
    return mixture


def mix_with_gains(clean, noise, clean_weight=1.0, noise_weight=1.0):
    """``combine_batches``' mixture and the gains that made it: ``mixture = g_clean * clean + g_noise * noise``.

    ``AddNoise`` scales the clean clip by ``1 - 1 / (10^(SNR / 20) + 1)``
    whatever the signals; what the noise added is the rest of its output,
    projected on ``noise``. (One ``AddNoise`` call, as ``combine_batches``
    always made: its draw of the SNR from torch's generator is the only one,
    so training draws the same random numbers as without the gains.)

    Returns
    -------
    mixture : torch.Tensor
        ``[batch, samples]``, as ``combine_batches``.
    clean_gain, noise_gain : torch.Tensor
        ``[batch]`` each.

    Example
    -------
    >>> mixture, clean_gain, noise_gain = mix_with_gains(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, -2.0]]))
    >>> mixture, clean_gain, noise_gain
    (tensor([[ 1., -1.]]), tensor([0.3333]), tensor([0.5000]))
    """
    if clean.dim() != 2 or clean.shape != noise.shape:
        raise ValueError(
            f"combine_batches needs clean and noise of the same shape [batch, samples]; "
            f"got clean {tuple(clean.shape)} and noise {tuple(noise.shape)}."
        )
    snr = 20 * math.log10(clean_weight / noise_weight)
    lengths = torch.ones(clean.shape[0], device=clean.device)
    mixture = AddNoise(snr_low=snr, snr_high=snr, noise_funct=lambda _: noise.clone())(clean, lengths)  # scales in place
    clean_scale = 1.0 - 1.0 / (10 ** (snr / 20) + 1.0)
    peak = torch.linalg.vector_norm(mixture, ord=float("inf"), dim=1).clamp_min(torch.finfo(mixture.dtype).tiny)
    noise_gain = _projection_gain(mixture - clean_scale * clean, noise) / peak
    return mixture.div_(peak.unsqueeze(1)), clean_scale / peak, noise_gain


def _projection_gain(part, signal):
    """``<part, signal> / |signal|^2`` per row (0 for a silent ``signal``): the ``g`` of ``part = g * signal``."""
    power = signal.square().sum(dim=1)
    return (part * signal).sum(dim=1) / power.clamp_min(torch.finfo(power.dtype).tiny)


@dataclasses.dataclass
class MixedBatch:
    """A batch as an evaluation heard it, with what was mixed in kept apart.

    ``wavs`` ``[batch, samples]`` is the interpreted input and ``clean`` the
    clips before mixing (the same tensor when nothing was mixed in). With a
    mixture, ``wavs = clean_gain * clean + added`` exactly: ``clean_gain``
    ``[batch]``, ``added`` ``[batch, samples]`` what the contamination added,
    as it sounds in ``wavs``. A contamination by clips of known classes also
    gives their classes ``added_labels`` ``[batch]`` and their events
    ``added_event`` ``[batch, samples]``, scaled as in ``added``.
    """

    wavs: torch.Tensor
    clean: torch.Tensor
    clean_gain: torch.Tensor | None = None
    added: torch.Tensor | None = None
    added_event: torch.Tensor | None = None
    added_labels: torch.Tensor | None = None

    @classmethod
    def of_clean(cls, clean):
        """The batch as it is, nothing mixed in."""
        return cls(wavs=clean, clean=clean)

    @classmethod
    def of_mixture(cls, clean, noise, clean_weight=1.0, noise_weight=1.0, noise_event=None, noise_labels=None):
        """``clean`` and ``noise`` ``[batch, samples]`` mixed by ``mix_with_gains``; ``noise_event`` (the noise's own
        event, ``[batch, samples]``) scaled by the noise's gain, and ``noise_labels`` ``[batch]``, kept beside it."""
        mixture, clean_gain, noise_gain = mix_with_gains(clean, noise, clean_weight, noise_weight)
        return cls(
            wavs=mixture, clean=clean, clean_gain=clean_gain, added=mixture - clean_gain.unsqueeze(1) * clean,
            added_event=None if noise_event is None else noise_gain.unsqueeze(1) * noise_event,
            added_labels=noise_labels,
        )

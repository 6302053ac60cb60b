"""Any sound file as the models read it: mono, resampled, peak-normalised; truncated WAVs refused.

Library code for the data preparations (ESC-50, WHAM!), file interpretation
and long recordings (``audio_stream``).
"""

import functools
import os

import soundfile as sf
import torch
import torchaudio


def check_wav_complete(path):
    """Raises ``ValueError`` naming ``path`` when it is a WAV file whose data chunk is shorter than its header says.

    libsndfile reads such a file (cut off mid-data) as a shorter one; the
    RIFF header's data size tells. Other formats, and WAVs of unknown
    length (a data size of 0 or 0xFFFFFFFF, as streams write), pass.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "cut.wav")
    >>> sf.write(path, np.zeros(1000, dtype="float32"), 16000, subtype="PCM_16")
    >>> with open(path, "r+b") as file:
    ...     _ = file.truncate(1044)  # a 44-byte header and 1000 of the 2000 data bytes
    >>> try:
    ...     check_wav_complete(path)
    ... except ValueError as error:
    ...     print(str(error).split("cut.wav ")[1])
    is truncated: its data chunk holds 1000 of the 2000 bytes its header declares.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                return
            declared = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                available = size - file.tell()
                if declared not in (0, 0xFFFFFFFF) and available < declared:
                    raise ValueError(
                        f"{path} is truncated: its data chunk holds {available} of the {declared} bytes its header declares."
                    )
                return
            file.seek(declared + declared % 2, os.SEEK_CUR)


@functools.lru_cache(maxsize=16)
def make_resampler(orig_rate, new_rate):
    """torchaudio's resampler from ``orig_rate`` to ``new_rate`` Hz: what every reader here resamples with."""
    return torchaudio.transforms.Resample(orig_rate, new_rate)


def read_audio_mono(path, sample_rate, frame_offset=0, num_frames=-1):
    """Reads an audio file (wav, flac, ogg, ...), mixes it to mono and resamples it.

    Arguments
    ---------
    path : str
        Any file soundfile can decode.
    sample_rate : int
        Output sample rate in Hz.
    frame_offset : int
        First frame to read, in the file's own sample rate.
    num_frames : int
        Number of frames to read, in the file's own sample rate; -1 reads to the end.

    Returns
    -------
    torch.Tensor
        Shape ``[samples]``, float32, ``samples = round(frames * sample_rate / file_rate)``.
    """
    stop = None if num_frames < 0 else frame_offset + num_frames
    audio, file_rate = sf.read(path, start=frame_offset, stop=stop, dtype="float32", always_2d=True)
    mono = torch.from_numpy(audio).mean(dim=1)  # [frames]
    if file_rate == sample_rate:
        return mono
    with torch.no_grad():
        return make_resampler(file_rate, sample_rate)(mono)


# Whole clips kept decoded by ``read_clip``: 5-s clips at 16 kHz are 320 kB each, so ESC-50 (2,000 clips) fits.
CLIP_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=CLIP_CACHE_SIZE)
def _decoded_clip(path, sample_rate, modified_ns, size):
    """``read_audio_mono`` of the whole file, kept per file version (``modified_ns``, ``size``)."""
    return read_audio_mono(path, sample_rate)


def read_clip(path, sample_rate):
    """``read_audio_mono`` of a whole file, decoded and resampled once per process: a new copy ``[samples]``.

    A dataset reads each clip at every epoch and every evaluation; on a CPU
    decoding and resampling a 5-s clip costs a few milliseconds, as much as
    a small model's step on it. The cache keys on the file's path, size and
    modification time, so a rewritten file is read again.
    """
    status = os.stat(path)
    return _decoded_clip(path, sample_rate, status.st_mtime_ns, status.st_size).clone()


def peak_normalize(waveform):
    """Scales each signal so that its largest absolute value is 1.

    A signal whose peak is below float32 resolution is treated as silence and
    returned as zeros, never NaN.

    Arguments
    ---------
    waveform : torch.Tensor
        Shape ``[..., samples]``.

    Returns
    -------
    torch.Tensor
        Same shape; a new tensor.

    Example
    -------
    >>> peak_normalize(torch.tensor([[0.5, -0.25], [0.0, 0.0]]))
    tensor([[ 1.0000, -0.5000],
            [ 0.0000,  0.0000]])
    """
    peak = waveform.abs().amax(dim=-1, keepdim=True)
    silent = peak <= torch.finfo(torch.float32).eps
    return torch.where(silent, torch.zeros_like(waveform), waveform / torch.where(silent, torch.ones_like(peak), peak))


def fit_length(waveform, num_samples):
    """Crops or zero-pads the last dimension to ``num_samples``.

    Arguments
    ---------
    waveform : torch.Tensor
        Shape ``[..., samples]``.
    num_samples : int
        Wanted length.

    Returns
    -------
    torch.Tensor
        Shape ``[..., num_samples]``.

    Example
    -------
    >>> fit_length(torch.ones(2, 3), 5)
    tensor([[1., 1., 1., 0., 0.],
            [1., 1., 1., 0., 0.]])
    """
    length = waveform.shape[-1]
    if length >= num_samples:
        return waveform[..., :num_samples]
    return torch.nn.functional.pad(waveform, (0, num_samples - length))

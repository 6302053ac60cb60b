"""Long recordings a piece at a time: any span of a sound file, as mono at the models' rate.

``ResampledAudio.read(start, stop)`` gives the samples ``[start, stop)`` that
``lmac.audio.io.read_audio_mono`` would give for the whole file, without
reading the rest of it, so an hour of audio needs the memory of a span. The
resampler (``lmac.audio.io.make_resampler``, as ``read_audio_mono``'s) maps each block of
``file_rate / g`` input samples to ``sample_rate / g`` output samples
(``g = gcd``); a span is read from a block boundary with a margin of blocks
on each side, which the filter's edges spoil and which is then cut off.
"""

import math

import soundfile as sf
import torch

from lmac.audio.io import check_wav_complete, make_resampler

# Input samples read on each side of a span, at least: more than half of torchaudio's resampling
# filter (6 zero crossings of the lower rate; 13 input samples from 44.1 to 16 kHz).
RESAMPLING_MARGIN = 256
READ_SPAN = 2**21  # samples read at once when going through a file (the peak, skipping ahead)


class ResampledAudio:
    """A sound file of any format libsndfile reads, as mono at ``sample_rate``, read a span at a time.

    Arguments
    ---------
    path : str
    sample_rate : int

    Raises
    ------
    ValueError
        The file cannot be opened or read, is a truncated WAV, or holds no samples; the message names it.

    Example
    -------
    >>> import tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "ramp.wav")
    >>> sf.write(path, np.linspace(-0.5, 0.5, 441, dtype="float32"), 44100, subtype="FLOAT")
    >>> audio = ResampledAudio(path, 16000)
    >>> audio.num_samples, audio.read(-2, 2).shape, audio.read(-2, 0).abs().max().item()
    (160, torch.Size([4]), 0.0)
    """

    def __init__(self, path, sample_rate):
        check_wav_complete(path)
        try:
            info = sf.info(path)
        except (RuntimeError, OSError) as error:  # soundfile's LibsndfileError is a RuntimeError
            raise ValueError(f"Cannot read {path}: {error}") from error
        self.path, self.sample_rate = path, sample_rate
        self.file_rate, self.file_frames = info.samplerate, info.frames
        common = math.gcd(self.file_rate, sample_rate)
        self.block_in, self.block_out = self.file_rate // common, sample_rate // common
        self.num_samples = -(-self.file_frames * self.block_out // self.block_in)  # torchaudio's output length
        if self.num_samples == 0:
            raise ValueError(f"{path} holds no audio samples.")
        self.margin_blocks = -(-RESAMPLING_MARGIN // self.block_in)
        self._file, self._buffer, self._buffer_start = None, torch.zeros(0), 0
        self.resampler = None if self.file_rate == sample_rate else make_resampler(self.file_rate, sample_rate)

    def read(self, start, stop):
        """Samples ``[start, stop)`` at ``sample_rate``, ``[stop - start]``; zeros outside the file."""
        if self.resampler is None:
            samples = self._file_span(start, stop)
        else:
            first = start // self.block_out - self.margin_blocks
            last = -(-stop // self.block_out) + self.margin_blocks
            with torch.no_grad():
                resampled = self.resampler(self._file_span(first * self.block_in, last * self.block_in))
            offset = start - first * self.block_out
            samples = resampled[offset : offset + stop - start]
        samples[: max(0, -start)] = 0  # before the file, and past its end (the resampler's tail)
        samples[max(0, self.num_samples - start) :] = 0
        return samples

    def _file_span(self, start, stop):
        """The file's frames ``[start, stop)`` mixed to mono, ``[stop - start]``, zeros outside the file.

        The file is read forward only (libsndfile's seeking in Ogg Vorbis
        lands on the wrong samples near the end), keeping the frames from
        the last span's start: spans that start no earlier than the one
        before cost one pass over the file; an earlier start reads it again
        from the beginning.
        """
        begin, end = max(0, start), min(self.file_frames, stop)
        if self._file is None or begin < self._buffer_start:
            self._rewind()
        position = self._buffer_start + self._buffer.shape[0]  # the file's next frame
        for skipped in range(position, begin, READ_SPAN):
            self._read_frames(min(READ_SPAN, begin - skipped))
        self._buffer = self._buffer[max(0, begin - self._buffer_start) :]
        self._buffer_start = max(self._buffer_start, begin)
        missing = end - self._buffer_start - self._buffer.shape[0]
        if missing > 0:
            self._buffer = torch.cat([self._buffer, self._read_frames(missing)])
        mono = torch.zeros(stop - start)
        available = self._buffer[: max(0, end - self._buffer_start)]
        mono[self._buffer_start - start : self._buffer_start - start + available.shape[0]] = available
        return mono

    def _read_frames(self, count):
        """The next ``count`` frames of the file (fewer at its end), mixed to mono."""
        try:
            audio = self._file.read(count, dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as error:  # soundfile's LibsndfileError is a RuntimeError
            raise ValueError(f"Cannot read {self.path}: {error}") from error
        return torch.from_numpy(audio).mean(dim=1)

    def _rewind(self):
        """Opens the file again at its first frame, with nothing kept."""
        self.close()
        self._file = sf.SoundFile(self.path)
        self._buffer, self._buffer_start = torch.zeros(0), 0

    def close(self):
        """Closes the file (a later read opens it again)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def peak(self):
        """The largest absolute sample at ``sample_rate``, read span by span."""
        spans = ((start, min(start + READ_SPAN, self.num_samples)) for start in range(0, self.num_samples, READ_SPAN))
        return max(self.read(start, stop).abs().max().item() for start, stop in spans)

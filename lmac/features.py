"""The features of every model here, with their constants kept on the model's device.

SpeechBrain's ``STFT`` and ``ISTFT`` copy their window to the input's device
at every call, and its ``Filterbank`` rebuilds its matrix on the CPU at every
call and copies it over: on a GPU each copy from pageable host memory waits
for the work already queued. The ``Device*`` classes here are SpeechBrain's
modules with those constants built once and registered as buffers, so that
``.to(device)`` (the Brain does it for its ``modules``) moves them once; the
numbers are SpeechBrain's. The buffers are not persistent: they are
constants of the settings, so checkpoints neither hold nor need them.

``spectral_features`` computes the features every model here reads: the
STFT, ``L = log1p|STFT|`` and the classifier's input, a function of ``L``
(``LogMelInput``: ``log1p(Mel(expm1(L)))``; ``LogMagnitudeInput``: ``L``).
"""

import dataclasses

import torch
from speechbrain.processing.features import ISTFT, STFT, Filterbank, InputNormalization


class _WindowOnDevice:
    """Makes SpeechBrain's ``self.window`` a buffer; its ``forward`` then finds it on the input's device."""

    def _register_window(self):
        window = self.window
        del self.window
        self.register_buffer("window", window, persistent=False)


class DeviceSTFT(_WindowOnDevice, STFT):
    """SpeechBrain's ``STFT`` with its window as a buffer that follows ``.to(device)``.

    Arguments
    ---------
    **kwargs
        As for ``speechbrain.processing.features.STFT``.

    Example
    -------
    >>> compute_stft = DeviceSTFT(sample_rate=16000, n_fft=400)
    >>> compute_stft(torch.randn(2, 16000)).shape, "window" in dict(compute_stft.named_buffers())
    (torch.Size([2, 101, 201, 2]), True)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._register_window()


class DeviceISTFT(_WindowOnDevice, ISTFT):
    """SpeechBrain's ``ISTFT`` with its window as a buffer that follows ``.to(device)``.

    Arguments
    ---------
    **kwargs
        As for ``speechbrain.processing.features.ISTFT``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._register_window()


class DeviceFilterbank(Filterbank):
    """SpeechBrain's ``Filterbank`` with its matrix built once, a buffer that follows ``.to(device)``.

    The matrix is what SpeechBrain's ``forward`` applies: that ``forward``
    run once on the identity (exact: each output is one weight times 1).
    Only fixed filters are supported (``freeze=True``, ``param_rand_factor=0``).

    Arguments
    ---------
    **kwargs
        As for ``speechbrain.processing.features.Filterbank``.

    Example
    -------
    >>> compute_fbank = DeviceFilterbank(n_mels=40, n_fft=400, log_mel=False)
    >>> compute_fbank.fbank_matrix.shape, compute_fbank(torch.rand(2, 101, 201)).shape
    (torch.Size([201, 40]), torch.Size([2, 101, 40]))
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.freeze or self.param_rand_factor != 0:
            raise ValueError(
                f"DeviceFilterbank keeps one fixed matrix, but freeze={self.freeze} and "
                f"param_rand_factor={self.param_rand_factor}; use speechbrain.processing.features.Filterbank "
                "for learnable or randomised filters."
            )
        self.register_buffer("fbank_matrix", self._speechbrain_matrix(), persistent=False)

    def _speechbrain_matrix(self):
        """``[n_fft // 2 + 1, n_mels]``: SpeechBrain's linear filterbank applied to the identity."""
        log_mel, self.log_mel = self.log_mel, False
        try:
            return super().forward(torch.eye(self.n_stft))
        finally:
            self.log_mel = log_mel

    def forward(self, spectrogram):
        """Filterbank energies of ``spectrogram``, as SpeechBrain's ``Filterbank`` computes them.

        Arguments
        ---------
        spectrogram : torch.Tensor
            ``[batch, frames, freq]``, or ``[batch, frames, freq, channels]``.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, n_mels]`` (``[batch, frames, n_mels, channels]``).
        """
        if spectrogram.dim() == 4:  # channels as examples, as SpeechBrain does (its dB floor is per channel)
            batch, frames, _, channels = spectrogram.shape
            merged = spectrogram.permute(0, 3, 1, 2).reshape(batch * channels, frames, -1)
            return self.forward(merged).reshape(batch, channels, frames, -1).permute(0, 2, 3, 1)
        # A no-op on the module's device; elsewhere (a caller that did not move it) one copy, as SpeechBrain does.
        fbanks = torch.matmul(spectrogram, self.fbank_matrix.to(spectrogram.device))
        return self._amplitude_to_DB(fbanks) if self.log_mel else fbanks


# SpeechBrain's per-clip mean removal (``InputNormalization`` of its ECAPA-TDNN recipes, without the std).
SENTENCE_MEAN_NORM = InputNormalization(norm_type="sentence", std_norm=False)


def sentence_mean_norm(classifier_input, statistics_of=None):
    """``[batch, frames, bins]`` less each clip's mean over frames, per bin: SpeechBrain's ``InputNormalization``
    with ``norm_type="sentence"`` and ``std_norm=False`` (``SENTENCE_MEAN_NORM``).

    ``statistics_of`` (``[batch, frames'', bins]``), when given, is the clip whose mean is removed: a masked
    input is normalised with its unmasked clip's statistics (``docs/method.md``, Other classifier families), that
    is shifted by as much as SpeechBrain's normalisation shifts the clip.

    Example
    -------
    >>> sentence_mean_norm(torch.tensor([[[1.0, 4.0], [3.0, 4.0]]]))
    tensor([[[-1.,  0.],
             [ 1.,  0.]]])
    >>> sentence_mean_norm(torch.zeros(1, 2, 2), statistics_of=torch.tensor([[[1.0, 4.0], [3.0, 4.0]]]))
    tensor([[[-2., -4.],
             [-2., -4.]]])
    """
    if statistics_of is None:
        return SENTENCE_MEAN_NORM(classifier_input)
    minus_clip_mean = (SENTENCE_MEAN_NORM(statistics_of) - statistics_of)[:, :1]  # [batch, 1, bins]
    return classifier_input + minus_clip_mean


class LogMelInput(torch.nn.Module):
    """A classifier input on mel bands: ``log1p(Mel(expm1(L)))`` of a ``log1p`` magnitude ``L`` (CNN14, ECAPA-TDNN).

    Arguments
    ---------
    compute_fbank : DeviceFilterbank
        With ``log_mel=False``; applied to the magnitude.
    mean_norm : bool
        Subtract each clip's mean per band (``sentence_mean_norm``), as SpeechBrain's ECAPA-TDNN recipes do.

    Example
    -------
    >>> to_input = LogMelInput(DeviceFilterbank(n_mels=8, n_fft=64, log_mel=False))
    >>> to_input(torch.rand(2, 5, 33)).shape, to_input.to_linear(torch.rand(2, 5, 8)).shape
    (torch.Size([2, 5, 8]), torch.Size([2, 5, 33]))
    """

    def __init__(self, compute_fbank, mean_norm=False):
        super().__init__()
        self.compute_fbank = compute_fbank
        self.mean_norm = mean_norm
        self.shares = {}  # linear_share of the filterbank per (every_bin, device, dtype), made once

    @property
    def uses_clip_statistics(self):
        """True when the input of a masked spectrogram depends on its unmasked clip (``mean_norm``)."""
        return self.mean_norm

    def log_mel(self, log_mag):
        """``log1p(Mel(expm1(L)))``: ``[batch, frames, freq]`` to ``[batch, frames, n_mels]``."""
        return torch.log1p(self.compute_fbank(torch.expm1(log_mag)))

    def forward(self, log_mag, clip_log_mag=None):
        """``[batch, frames, freq]`` to ``[batch, frames, n_mels]``; differentiable with respect to ``log_mag``.

        With ``mean_norm``, the mean per band removed is that of ``clip_log_mag`` (the unmasked clip of a
        masked ``log_mag``, ``[batch, frames'', freq]``), or of ``log_mag`` itself when None.
        """
        log_mel = self.log_mel(log_mag)
        if not self.mean_norm:
            return log_mel
        return sentence_mean_norm(log_mel, None if clip_log_mag is None else self.log_mel(clip_log_mag))

    def to_linear(self, attribution, every_bin=False):
        """An attribution over the input ``[batch, frames, n_mels]`` on the STFT grid ``[batch, frames, freq]``:
        each bin takes the filterbank-weighted mean of the bands covering it (``mel_to_linear``); a bin no band
        covers (DC, Nyquist) gets 0, or with ``every_bin`` (a mask's logits) the value of the nearest covered bin.
        The share matrix is made once per device and dtype: a decoder's every forward only multiplies by it."""
        key = (every_bin, attribution.device, attribution.dtype)
        if key not in self.shares:
            fbank_matrix = self.compute_fbank.fbank_matrix.to(attribution.device, attribution.dtype)
            self.shares[key] = linear_share(fbank_matrix, every_bin)
        return attribution @ self.shares[key].T


class LogMagnitudeInput(torch.nn.Module):
    """A classifier input on the linear STFT: ``L = log1p|STFT|`` itself (SpeechBrain's ``Conv2dEncoder_v2``).

    Arguments
    ---------
    mean_norm : bool
        Subtract each clip's mean per bin (``sentence_mean_norm``).

    Example
    -------
    >>> log_mag = torch.rand(1, 3, 5)
    >>> torch.equal(LogMagnitudeInput()(log_mag), log_mag)
    True
    """

    def __init__(self, mean_norm=False):
        super().__init__()
        self.mean_norm = mean_norm

    @property
    def uses_clip_statistics(self):
        """True when the input of a masked spectrogram depends on its unmasked clip (``mean_norm``)."""
        return self.mean_norm

    def forward(self, log_mag, clip_log_mag=None):
        """``[batch, frames, freq]``, unchanged, or less the mean per bin (``mean_norm``) of ``clip_log_mag`` (the
        unmasked clip of a masked ``log_mag``), or of ``log_mag`` itself when None."""
        return sentence_mean_norm(log_mag, clip_log_mag) if self.mean_norm else log_mag

    def to_linear(self, attribution, every_bin=False):
        """An attribution over the input is already on the STFT grid ``[batch, frames, freq]``, every bin covered."""
        return attribution


def mel_to_linear(attribution, fbank_matrix, every_bin=False):
    """Maps ``[batch, frames, n_mels]`` to ``[batch, frames, freq]``: the filterbank-weighted mean per bin.

    ``fbank_matrix`` is ``[freq, n_mels]``; a bin no mel band covers gets 0,
    or with ``every_bin`` the value of the nearest covered bin (the lower one on a tie).

    Example
    -------
    >>> weights = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    >>> mel_to_linear(torch.tensor([[[2.0, 4.0]]]), weights)
    tensor([[[0., 2., 3., 0.]]])
    >>> mel_to_linear(torch.tensor([[[2.0, 4.0]]]), weights, every_bin=True)
    tensor([[[2., 2., 3., 3.]]])
    """
    return attribution @ linear_share(fbank_matrix, every_bin).T


def linear_share(fbank_matrix, every_bin=False):
    """``mel_to_linear``'s matrix ``[freq, n_mels]``: each bin's filterbank weights divided by their sum (a bin no
    band covers: zeros, or with ``every_bin`` the row of the nearest covered bin)."""
    coverage = fbank_matrix.sum(dim=1)  # [freq]
    share = fbank_matrix / coverage.clamp_min(torch.finfo(fbank_matrix.dtype).tiny)[:, None]
    return share[nearest_covered_bin(coverage > 0)] if every_bin else share


def nearest_covered_bin(covered):
    """For each bin, the index of the nearest bin with ``covered`` True (the lower one on a tie): ``[freq]`` bool to
    ``[freq]`` long.

    Example
    -------
    >>> nearest_covered_bin(torch.tensor([False, True, False, False, True, False]))
    tensor([1, 1, 1, 4, 4, 4])
    """
    positions = torch.arange(covered.shape[0], device=covered.device)
    covered_positions = positions[covered]  # [covered bins]
    distance = (positions[:, None] - covered_positions[None, :]).abs()  # [freq, covered bins]
    return covered_positions[distance.argmin(dim=1)]


@dataclasses.dataclass
class SpectralFeatures:
    """Features of one batch, computed once and reused by losses, metrics and outputs.

    ``stft``: ``[batch, frames, freq, 2]``; ``log_mag``: ``log1p|STFT|``,
    ``[batch, frames, freq]``; ``classifier_input``: what the classifier
    reads, a function of ``log_mag`` (``LogMelInput``: ``[batch, frames, n_mels]``).
    """

    stft: torch.Tensor
    log_mag: torch.Tensor
    classifier_input: torch.Tensor


@torch.no_grad()
def spectral_features(wavs, compute_stft, classifier_input):
    """The features of the method, shared by the classifier and interpreter recipes.

    They are the fixed input of every model here, so no gradient flows back
    to ``wavs`` through them.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[batch, samples]``.
    compute_stft : speechbrain.processing.features.STFT
    classifier_input : torch.nn.Module
        Maps ``log1p|STFT|`` to the classifier's input (``LogMelInput``, ``LogMagnitudeInput``).

    Returns
    -------
    SpectralFeatures
        STFT, ``log1p|STFT|`` and the classifier input.
    """
    stft = compute_stft(wavs)  # [batch, frames, freq, 2]
    real, imaginary = stft.unbind(dim=-1)
    # sqrt(re^2 + im^2) in two passes: 2-4x faster on the CPU than the complex abs, equal within float32 rounding.
    magnitude = torch.addcmul(real.square(), imaginary, imaginary).sqrt_()  # [batch, frames, freq]
    log_mag = torch.log1p(magnitude)
    # Through log_mag, as masked inputs are: an all-ones mask then gives the classifier its input bit for bit.
    return SpectralFeatures(stft=stft, log_mag=log_mag, classifier_input=classifier_input(log_mag))


def stft_phase(stft):
    """The phase ``atan2(im, re)`` of an STFT ``[batch, frames, freq, 2]``, ``[batch, frames, freq]``.

    Example
    -------
    >>> stft_phase(torch.tensor([[[[0.0, 1.0], [-1.0, 0.0]]]]))
    tensor([[[1.5708, 3.1416]]])
    """
    return torch.atan2(stft[..., 1], stft[..., 0])


def stft_frame_count(signal_length_s, sample_rate, hop_length_ms):
    """Frames of SpeechBrain's centred STFT of a clip: ``samples // hop + 1``.

    Example
    -------
    >>> stft_frame_count(5, 16000, 11.6099)
    431
    """
    hop = int(round(sample_rate / 1000.0 * hop_length_ms))
    return int(round(signal_length_s * sample_rate)) // hop + 1

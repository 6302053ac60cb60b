"""What a mask does to a spectrogram: the masked-in and masked-out inputs, and the listenable interpretation.

Spectrograms are ``log1p|STFT|`` ``[batch, frames, freq]``; a mask
``[batch, frames', freq]`` in ``[0, 1]`` may cover fewer frames than its
input (the decoder's output length), and everything is cropped to it.
"""

import torch

from lmac.features import stft_phase


def crop_frames(spectrogram, num_frames):
    """The first ``num_frames`` frames of ``[batch, frames, ...]``.

    Raises
    ------
    ValueError
        ``spectrogram`` has fewer frames than asked for.
    """
    if spectrogram.shape[1] < num_frames:
        raise ValueError(
            f"Cannot crop {tuple(spectrogram.shape)} to {num_frames} frames: the mask is longer than the input."
        )
    return spectrogram[:, :num_frames]


def masked_log_magnitudes(mask, log_mag, reference=None):
    """Masked-in ``M * L + (1 - M) * R`` and masked-out ``(1 - M) * L + M * R``, cropped to the mask's frames.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames', freq]`` with values in ``[0, 1]``.
    log_mag : torch.Tensor
        ``[batch, frames, freq]``, ``frames >= frames'``.
    reference : torch.Tensor or None
        ``R``, ``[batch, frames', freq]`` (``mask_references``); None: silence, ``R = 0``.

    Returns
    -------
    tuple of torch.Tensor
        Both ``[batch, frames', freq]``.

    Example
    -------
    >>> masked_in, masked_out = masked_log_magnitudes(torch.full((1, 2, 3), 0.25), torch.ones(1, 4, 3))
    >>> masked_in.shape, masked_in[0, 0, 0].item(), masked_out[0, 0, 0].item()
    (torch.Size([1, 2, 3]), 0.25, 0.75)
    >>> masked_in, masked_out = masked_log_magnitudes(torch.full((1, 2, 3), 0.25), torch.ones(1, 4, 3), torch.full((1, 2, 3), 2.0))
    >>> masked_in[0, 0, 0].item(), masked_out[0, 0, 0].item()
    (1.75, 1.25)
    """
    cropped = crop_frames(log_mag, mask.shape[1])
    if reference is None:
        return mask * cropped, (1 - mask) * cropped
    gap = cropped - reference  # not torch.lerp: under autocast the mask may be bf16 while L is float32
    return reference + mask * gap, cropped - mask * gap


def inverted_interpretation(mask, features, num_samples, compute_istft):
    """Listenable interpretation: ``expm1(M * L)`` with the input's phase, inverted.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames', freq]``.
    features : SpectralFeatures
        Of the interpreted input (``frames >= frames'``).
    num_samples : int
        Length of the input; frames past ``frames'`` are silent.
    compute_istft : speechbrain.processing.features.ISTFT

    Returns
    -------
    torch.Tensor
        ``[batch, num_samples]``.
    """
    masked_in, _ = masked_log_magnitudes(mask, features.log_mag)
    magnitude = torch.expm1(masked_in)  # [batch, frames', freq]
    phase = stft_phase(crop_frames(features.stft, mask.shape[1]))
    spectrum = torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)
    missing = features.stft.shape[1] - mask.shape[1]
    spectrum = torch.nn.functional.pad(spectrum, (0, 0, 0, 0, 0, missing))  # [batch, frames, freq, 2]
    return compute_istft(spectrum, sig_length=num_samples)

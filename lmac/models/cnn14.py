"""The CNN14 family at any width, and decoding of masks for any clip length.

At width 1 the classifier is SpeechBrain's own ``Cnn14`` (so the published
checkpoints load); at a smaller width every channel count is multiplied by
the width and the structure stays the same. The decoder is always
SpeechBrain's ``CNN14PSI_stft(dim=emb_dim)``: its channel counts follow
``dim`` (``dim``, ``dim/2``, ``dim/4``, ``dim/8`` for the four feature maps),
so it matches a scaled classifier as it is.
"""

import math

import torch
from speechbrain.lobes.models.Cnn14 import Cnn14, CNN14PSI_stft, ConvBlock, init_bn

CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
# Facts of CNN14PSI_stft on CNN14 feature maps: the deepest two maps have
# ``a`` time steps, the next ``2a`` and the shallowest ``4a + 1``; the decoder
# then returns ``32 a + 9`` frames. Other sizes make it fail.
DECODER_TIME_STRIDE = 32
DECODER_EXTRA_FRAMES = 9


def scaled_channels(channels, width):
    """``channels * width`` rounded, at least 8 so that ``dim / 8`` stays a whole channel.

    Example
    -------
    >>> scaled_channels(2048, 1), scaled_channels(2048, 0.0625), scaled_channels(64, 0.01)
    (2048, 128, 8)
    """
    return max(8, int(round(channels * width)))


class ScaledCnn14(torch.nn.Module):
    """SpeechBrain's CNN14 with every channel count multiplied by ``width``.

    Same layers, names and forward pass as ``speechbrain.lobes.models.Cnn14.Cnn14``
    (whose ``forward`` it uses); ``emb_dim = scaled_channels(2048, width)``.

    Arguments
    ---------
    mel_bins : int
        Mel bands of the input.
    width : float
        Channel multiplier, e.g. ``1/16``.
    norm_type : str
        ``bn``, ``in`` or ``ln``, as for ``Cnn14``.
    return_reps : bool
        Also return the four feature maps the decoder reads.

    Example
    -------
    >>> model = ScaledCnn14(mel_bins=80, width=1 / 16)
    >>> embedding, feature_maps = model(torch.rand(2, 431, 80))
    >>> embedding.shape, [tuple(h.shape[1:3]) for h in feature_maps]
    (torch.Size([2, 1, 128]), [(128, 13), (64, 13), (32, 26), (16, 53)])
    """

    forward = Cnn14.forward

    def __init__(self, mel_bins, width, norm_type="bn", return_reps=True):
        super().__init__()
        if norm_type != "bn":
            raise ValueError(f"norm_type={norm_type!r}; ScaledCnn14 supports 'bn' only.")
        self.return_reps = return_reps
        self.l2i = False
        self.norm_type = norm_type
        self.norm0 = torch.nn.BatchNorm2d(mel_bins)
        channels = (1, *(scaled_channels(count, width) for count in CNN14_CHANNELS))
        for index in range(1, len(channels)):
            setattr(self, f"conv_block{index}", ConvBlock(channels[index - 1], channels[index], norm_type))
        self.emb_dim = channels[-1]
        init_bn(self.norm0)


def cnn14_embedding_model(mel_bins, width):
    """The CNN14 classifier body at a width: SpeechBrain's ``Cnn14`` at width 1, else ``ScaledCnn14``.

    Returns
    -------
    torch.nn.Module
        Maps ``[batch, frames, mel_bins]`` to ``([batch, 1, emb_dim], feature_maps)``.
    """
    if width == 1:
        return Cnn14(mel_bins=mel_bins, emb_dim=CNN14_CHANNELS[-1], return_reps=True)
    return ScaledCnn14(mel_bins=mel_bins, width=width)


def _fit_time_steps(feature_map, steps):
    """Crops, or pads by repeating the last step, ``[batch, channels, time, freq]`` to ``steps`` time steps."""
    missing = steps - feature_map.shape[2]
    if missing <= 0:
        return feature_map[:, :, :steps]
    return torch.nn.functional.pad(feature_map, (0, 0, 0, missing), mode="replicate")


def fit_feature_maps(feature_maps, num_frames):
    """Pads or crops CNN14 feature maps so that a CNN14 decoder covers ``num_frames`` frames.

    SpeechBrain's ``CNN14PSI_stft`` decoders (L-MAC's in ``Cnn14``, L2I's in
    ``L2I``) only accept feature maps of ``(a, a, 2a, 4a + 1)`` time steps;
    L-MAC's returns ``32 a + 9`` frames and L2I's ``32 a + 15``. The maps are
    padded (by repeating their last step) or cropped to the smallest ``a``
    with ``32 a + 9 >= num_frames``.

    Arguments
    ---------
    feature_maps : tuple of torch.Tensor
        From CNN14, deepest first: ``[batch, channels_k, time_k, freq_k]``.
    num_frames : int

    Returns
    -------
    list of torch.Tensor
        The four maps with ``(a, a, 2a, 4a + 1)`` time steps.
    """
    steps = max(1, math.ceil((num_frames - DECODER_EXTRA_FRAMES) / DECODER_TIME_STRIDE))
    sizes = (steps, steps, 2 * steps, 4 * steps + 1)
    return [_fit_time_steps(feature_map, size) for feature_map, size in zip(feature_maps, sizes)]


def decode_any_length(decoder, feature_maps, num_frames):
    """Runs L-MAC's ``CNN14PSI_stft`` for any clip length and returns exactly ``num_frames`` frames.

    Arguments
    ---------
    decoder : speechbrain.lobes.models.Cnn14.CNN14PSI_stft
    feature_maps : tuple of torch.Tensor
        From CNN14, deepest first: ``[batch, channels_k, time_k, freq_k]``.
    num_frames : int
        Frames of the interpreted spectrogram.

    Returns
    -------
    torch.Tensor
        Mask logits, ``[batch, num_frames, freq]``.

    Example
    -------
    >>> from speechbrain.lobes.models.Cnn14 import CNN14PSI_stft
    >>> model = ScaledCnn14(mel_bins=80, width=1 / 16)
    >>> _, feature_maps = model(torch.rand(1, 500, 80))
    >>> decode_any_length(CNN14PSI_stft(dim=model.emb_dim), feature_maps, 500).shape
    torch.Size([1, 500, 513])
    """
    return decoder(fit_feature_maps(feature_maps, num_frames))[:, 0, :num_frames]


class CNN14Decoder(CNN14PSI_stft):
    """SpeechBrain's ``CNN14PSI_stft`` (the published L-MAC decoder) for any clip length.

    Same layers and state dict as ``CNN14PSI_stft(dim, outdim=1)``, so its
    published checkpoints load; ``forward`` takes the clip's frame count, as
    every L-MAC decoder here does (``decode_any_length``).

    Arguments
    ---------
    dim : int
        CNN14's embedding width (``emb_dim``).

    Example
    -------
    >>> model = ScaledCnn14(mel_bins=80, width=1 / 16)
    >>> _, feature_maps = model(torch.rand(1, 300, 80))
    >>> CNN14Decoder(dim=model.emb_dim)(feature_maps, 300).shape
    torch.Size([1, 300, 513])
    """

    def __init__(self, dim):
        super().__init__(dim=dim, outdim=1)

    def forward(self, feature_maps, num_frames):
        """Mask logits ``[batch, num_frames, freq]`` from CNN14's four feature maps, deepest first."""
        return decode_any_length(super().forward, feature_maps, num_frames)

"""A small vision transformer on spectrogram patches, the recipe's transformer family.

Patches of ``patch`` frames x bands of the classifier input become tokens,
with a learned position embedding on their grid (stretched over time for
clips of another length). The input is padded with silence (0) to whole
patches, so every frame is read and the token grid spans
``ceil(frames / patch) * patch`` frames, the clip and at most ``patch - 1``
frames of padding. Each ``GridBlock`` is a pre-norm transformer layer
(``torch.nn.TransformerEncoderLayer``) that takes and returns the tokens on
their grid, ``[batch, dim, frames', bands']``: its output is a 2-D feature map
that L-MAC's decoder and Grad-CAM read like a CNN's. The embedding is the
mean of the last layer's tokens.
"""

import math

import torch
import torch.nn.functional as F


class GridBlock(torch.nn.Module):
    """A transformer layer on tokens laid out on their grid ``[batch, dim, frames', bands']``.

    Example
    -------
    >>> GridBlock(dim=16, heads=2)(torch.rand(2, 16, 3, 4)).shape
    torch.Size([2, 16, 3, 4])
    """

    def __init__(self, dim, heads, mlp_ratio=2):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=mlp_ratio * dim, dropout=0.0, batch_first=True, norm_first=True
        )

    def forward(self, grid):
        """``[batch, dim, frames', bands']`` to the same shape."""
        batch, dim, frames, bands = grid.shape
        tokens = self.layer(grid.flatten(2).transpose(1, 2))  # [batch, frames' * bands', dim]
        return tokens.transpose(1, 2).reshape(batch, dim, frames, bands)


class SpectrogramViT(torch.nn.Module):
    """A ViT on ``[batch, frames, bins]`` spectrograms: ``[batch, 1, dim]`` embeddings.

    Arguments
    ---------
    input_bins : int
        Bins (mel bands) of the input.
    frames : int
        Frames of a training clip (the position embedding's grid).
    dim, depth, heads : int
        Token width, layers, attention heads.
    patch : list of int
        Frames and bins per patch.

    Example
    -------
    >>> model = SpectrogramViT(input_bins=80, frames=431, dim=16, depth=2, heads=2)
    >>> model(torch.rand(2, 431, 80)).shape, model(torch.rand(1, 200, 80)).shape
    (torch.Size([2, 1, 16]), torch.Size([1, 1, 16]))
    """

    def __init__(self, input_bins, frames, dim=192, depth=4, heads=4, patch=(16, 16)):
        super().__init__()
        self.patch = tuple(patch)
        self.norm = torch.nn.BatchNorm2d(1)
        self.embed = torch.nn.Conv2d(1, dim, kernel_size=self.patch, stride=self.patch)
        grid = (math.ceil(frames / self.patch[0]), math.ceil(input_bins / self.patch[1]))
        self.position = torch.nn.Parameter(torch.zeros(1, dim, *grid))
        torch.nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = torch.nn.Sequential(*(GridBlock(dim, heads) for _ in range(depth)))
        self.out_norm = torch.nn.LayerNorm(dim)

    def forward(self, spectrogram):
        """``[batch, frames, bins]`` to ``[batch, 1, dim]``."""
        grid = self.embed(self.norm(whole_patches(spectrogram, self.patch)[:, None]))  # [batch, dim, frames', bands']
        grid = grid + F.interpolate(self.position, size=grid.shape[2:], mode="bilinear", align_corners=False)
        tokens = self.blocks(grid)
        return self.out_norm(tokens.mean(dim=(2, 3)))[:, None]


def whole_patches(spectrogram, patch):
    """``[batch, frames, bins]`` padded with zeros at the end of each axis to whole ``patch`` (frames, bins).

    Example
    -------
    >>> whole_patches(torch.ones(1, 17, 16), (16, 16)).shape
    torch.Size([1, 32, 16])
    """
    frames, bins = spectrogram.shape[1:]
    return F.pad(spectrogram, (0, -bins % patch[1], 0, -frames % patch[0]))

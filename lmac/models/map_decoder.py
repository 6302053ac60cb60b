"""L-MAC's decoder for any classifier family: feature maps of any shape to a mask on the STFT grid.

The decoder works on the classifier input's grid (frames x ``input_bins``:
mel bands for a mel input, STFT bins for a linear one), where the maps'
frequency axes lie, and its logits reach the STFT grid through the input's
own ``to_linear`` (for mel bands: each bin takes the filterbank-weighted mean
of the bands covering it), so a map's frequency rows land on the bins they
come from. Each feature map the family names becomes ``hidden`` channels on
a common grid of ``ceil(frames / grid_stride[0])`` x ``ceil(input_bins / grid_stride[1])``:

- a 2-D map ``[batch, channels, frames', freq']`` (a CNN's, or a
  transformer's patch tokens on their grid) by a 1x1 convolution, then
  bilinear resizing. A map whose cells cover a known number of input frames
  and bins (``map_cells``: a transformer's patch) is resized to the span its
  cells cover and cut to the input's: a token grid padded to whole patches
  (``ceil(frames / 16) * 16`` frames) is not stretched onto ``frames``;
- a 1-D map over frames ``[batch, channels, frames']`` (ECAPA-TDNN's) by a
  1x1 convolution to ``hidden * freq_rows`` channels, read as ``freq_rows``
  frequency rows (a learned spread of each frame over frequency), then
  bilinear resizing.

The maps are summed, two 3x3 convolutions fuse them, a 1x1 convolution
gives one logit per grid cell, and the logits are resized bilinearly to
``[batch, frames, input_bins]``, then put on the STFT grid ``[batch, frames,
freq]``; a bin no mel band covers (DC, Nyquist) takes its nearest covered
bin's logit, so no part of the interpretation stays at 0.5. ``hidden`` and ``grid_stride`` set its size.
CNN14 keeps SpeechBrain's published ``CNN14PSI_stft`` (``lmac.models.cnn14.CNN14Decoder``).
"""

import math

import torch
import torch.nn.functional as F


class MapDecoder(torch.nn.Module):
    """Mask logits ``[batch, frames, freq]`` from feature maps of any shape.

    Arguments
    ---------
    map_channels : list of int
        Channels of each feature map, in the order the classifier gives them.
    map_ranks : list of int
        1 for a map over frames ``[batch, channels, frames']``, 2 for
        ``[batch, channels, frames', freq']``; one per map.
    classifier_input : torch.nn.Module
        The family's input (``features.LogMelInput``, ``features.LogMagnitudeInput``): its ``to_linear`` maps
        ``[batch, frames, input_bins]`` to the STFT grid.
    input_bins : int
        Bins of the classifier input (``n_mels``, or ``n_fft // 2 + 1``).
    hidden : int
        Channels of the fused grid.
    grid_stride : list of int
        Frames and bins per cell of the fused grid.
    freq_rows : int
        Frequency rows a 1-D map is spread over.
    map_cells : list of (list of int or None), optional
        Per map, the input frames and bins one of its cells covers (a patch), or None: the map spans the input.

    Example
    -------
    >>> from lmac.features import DeviceFilterbank, LogMelInput
    >>> to_input = LogMelInput(DeviceFilterbank(n_mels=20, n_fft=128, log_mel=False))
    >>> decoder = MapDecoder([16, 8], [2, 1], to_input, input_bins=20, hidden=8)
    >>> maps = (torch.rand(2, 16, 5, 4), torch.rand(2, 8, 12))
    >>> decoder(maps, 50).shape
    torch.Size([2, 50, 65])
    """

    def __init__(
        self,
        map_channels,
        map_ranks,
        classifier_input,
        input_bins,
        hidden=32,
        grid_stride=(4, 1),
        freq_rows=16,
        map_cells=None,
    ):
        super().__init__()
        if len(map_channels) != len(map_ranks) or any(rank not in (1, 2) for rank in map_ranks):
            raise ValueError(
                f"MapDecoder needs one rank (1 or 2) per feature map; got map_channels={list(map_channels)} "
                f"and map_ranks={list(map_ranks)}."
            )
        self.map_ranks = list(map_ranks)
        self.map_cells = list(map_cells) if map_cells is not None else [None] * len(self.map_ranks)
        if len(self.map_cells) != len(self.map_ranks) or any(
            cell is not None and rank != 2 for cell, rank in zip(self.map_cells, self.map_ranks)
        ):
            raise ValueError(f"MapDecoder needs one cell (or None) per 2-D map; got map_cells={map_cells}.")
        self.classifier_input = classifier_input
        self.input_bins = input_bins
        self.hidden = hidden
        self.grid_stride = tuple(grid_stride)
        self.freq_rows = freq_rows
        self.projections = torch.nn.ModuleList(
            torch.nn.Conv2d(channels, hidden, 1) if rank == 2 else torch.nn.Conv1d(channels, hidden * freq_rows, 1)
            for channels, rank in zip(map_channels, map_ranks)
        )
        self.fuse = torch.nn.Sequential(
            torch.nn.Conv2d(hidden, hidden, 3, padding=1),
            torch.nn.BatchNorm2d(hidden),
            torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, hidden, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, feature_maps, num_frames):
        """Mask logits ``[batch, num_frames, freq]`` on the STFT grid from the maps of ``map_ranks``' shapes."""
        if len(feature_maps) != len(self.projections):
            raise ValueError(
                f"MapDecoder was built for {len(self.projections)} feature maps and got {len(feature_maps)}."
            )
        grid = (math.ceil(num_frames / self.grid_stride[0]), math.ceil(self.input_bins / self.grid_stride[1]))
        fused = sum(
            onto_grid(self.on_grid_plane(projection, feature_map, rank), grid, cell, self.grid_stride)
            for projection, feature_map, rank, cell in zip(
                self.projections, feature_maps, self.map_ranks, self.map_cells
            )
        )
        logits = self.fuse(torch.relu(fused))  # [batch, 1, grid frames, grid bins]
        on_input = F.interpolate(logits, size=(num_frames, self.input_bins), mode="bilinear", align_corners=False)[:, 0]
        return self.classifier_input.to_linear(on_input, every_bin=True)  # no bin left at logit 0 (mask 0.5)

    def on_grid_plane(self, projection, feature_map, rank):
        """One map projected to ``[batch, hidden, frames', rows]``; a 1-D map's channels become ``freq_rows`` rows."""
        projected = projection(feature_map)
        if rank == 2:
            return projected
        batch, _, frames = projected.shape
        return projected.view(batch, self.hidden, self.freq_rows, frames).transpose(2, 3)


def onto_grid(plane, grid, cell=None, grid_stride=(1, 1)):
    """A map ``[batch, channels, frames', rows]`` resized bilinearly onto the fused ``grid`` (frames, bins).

    Without ``cell`` the map spans the input and is stretched onto the grid.
    With ``cell`` (the input frames and bins one map cell covers, a patch) it
    is resized to the grid cells its cells cover, ``frames' * cell / grid_stride``,
    and cut to ``grid``: the part of a padded token grid past the input's end
    is dropped, not squeezed in (an edge the map does not reach repeats its last cell).

    Example
    -------
    >>> tokens = torch.arange(7.0).view(1, 1, 7, 1)  # 7 patches of 16 frames: 112 frames for a 101-frame input
    >>> on_input = onto_grid(tokens, (101, 1), cell=(16, 1))[0, 0, :, 0]
    >>> round(float(on_input[8]), 3), round(float(on_input[100]), 3)  # frame f: patch (f + 0.5) / 16 - 0.5
    (0.031, 5.781)
    """
    if cell is None:
        return F.interpolate(plane, size=grid, mode="bilinear", align_corners=False)
    size = tuple(math.ceil(plane.shape[axis] * cell[index] / grid_stride[index]) for index, axis in enumerate((2, 3)))
    resized = F.interpolate(plane, size=size, mode="bilinear", align_corners=False)[:, :, : grid[0], : grid[1]]
    missing = (0, grid[1] - resized.shape[3], 0, grid[0] - resized.shape[2])
    return F.pad(resized, missing, mode="replicate") if any(missing) else resized

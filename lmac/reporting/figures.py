"""Pictures of an interpretation: the input spectrogram, the mask and the masked spectrogram side by side."""

from matplotlib.figure import Figure


def spectrogram_extent(num_frames, num_bins, hop_length, sample_rate):
    """``imshow`` extent ``(left, right, bottom, top)`` of a centred one-sided STFT, in seconds and kHz.

    Each cell is centred on its frame's time (``t * hop``) and its bin's
    frequency (``f * sample_rate / n_fft``).

    Example
    -------
    >>> spectrogram_extent(3, 5, 8000, 16000)  # frames at 0, 0.5 and 1 s; bins at 0, 2, ..., 8 kHz
    (-0.25, 1.25, -1.0, 9.0)
    """
    frame_s = hop_length / sample_rate
    bin_khz = sample_rate / 2 / (num_bins - 1) / 1000
    return (-frame_s / 2, (num_frames - 0.5) * frame_s, -bin_khz / 2, (num_bins - 0.5) * bin_khz)


def save_spectrogram_figure(log_mag, mask, path, title, hop_length, sample_rate):
    """Saves ``spectrogram_figure`` as a PNG at ``path``."""
    spectrogram_figure(log_mag, mask, title, hop_length, sample_rate).savefig(path, dpi=80)


def spectrogram_figure(log_mag, mask, title, hop_length, sample_rate):
    """A figure of the input ``log1p`` spectrogram, the mask and the masked spectrogram.

    Time in seconds, frequency in kHz; the input and the interpretation
    share one colour scale, so what the mask removed shows as darker.

    Arguments
    ---------
    log_mag : torch.Tensor
        ``[frames, freq]``.
    mask : torch.Tensor
        ``[frames', freq]``.
    title : str
    hop_length : int
        STFT hop in samples.
    sample_rate : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    log_mag = log_mag.detach().float().cpu()
    mask = mask.detach().float().cpu()
    top = log_mag.max().item()
    panels = (
        ("input log1p|STFT|", log_mag, top),
        ("mask", mask, 1.0),
        ("interpretation log1p|STFT|", mask * log_mag[: mask.shape[0]], top),
    )
    figure = Figure(figsize=(15, 4))
    axes = figure.subplots(1, 3)
    for axis, (name, image, vmax) in zip(axes, panels):
        extent = spectrogram_extent(image.shape[0], image.shape[1], hop_length, sample_rate)
        shown = axis.imshow(image.T.numpy(), origin="lower", aspect="auto", vmin=0, vmax=vmax, extent=extent)
        axis.set_title(name)
        axis.set_xlabel("time (s)")
        figure.colorbar(shown, ax=axis)
    axes[0].set_ylabel("frequency (kHz)")
    figure.suptitle(title)
    figure.subplots_adjust(left=0.035, right=0.985, bottom=0.13, top=0.84, wspace=0.15)  # tight_layout's, fixed: faster
    return figure

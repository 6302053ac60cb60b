"""The NMF dictionary of the L2I baseline: multiplicative updates on the training clips' ``log1p|STFT|`` frames."""

import json
import logging
import os

import speechbrain as sb
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from lmac.features import spectral_features

logger = logging.getLogger(__name__)


EPSILON = 1e-10


def training_frames(dataset, hparams, device, generator):
    """The ``log1p|STFT|`` frames of every clip of ``dataset``, at most ``nmf_max_frames`` at random.

    Returns
    -------
    torch.Tensor
        ``[freq, frames]``, non-negative.
    """
    loader = sb.dataio.dataloader.make_dataloader(
        dataset, batch_size=hparams["batch_size"], num_workers=hparams["num_workers"]
    )
    frames = []
    with torch.no_grad():
        for batch in tqdm(loader, desc="NMF frames", dynamic_ncols=True):
            wavs, lengths = batch.sig
            features = spectral_features(wavs.to(device), hparams["compute_stft"], hparams["classifier_input"])
            for log_mag, length in zip(features.log_mag, lengths):
                frames.append(log_mag[: max(1, int(round(length.item() * log_mag.shape[0])))])
    frames = torch.cat(frames)  # [frames, freq]
    if frames.shape[0] > hparams["nmf_max_frames"]:
        chosen = torch.randperm(frames.shape[0], generator=generator)[: hparams["nmf_max_frames"]]
        frames = frames[chosen.to(frames.device)]
    return frames.T.contiguous()


def nmf_multiplicative(spectrogram, components, iterations, generator):
    """Factorises ``spectrogram`` ``[freq, frames]`` (non-negative) as ``W @ H``.

    Lee and Seung's multiplicative updates for ``||V - W H||_F^2``; after
    each update the columns of ``W`` are scaled to a maximum of 1 (and
    ``H``'s rows the other way), which keeps the product and fixes the scale.

    Returns
    -------
    dictionary : torch.Tensor
        ``W``, ``[freq, components]``, non-negative.
    activations : torch.Tensor
        ``H``, ``[components, frames]``, non-negative.

    Example
    -------
    >>> generator = torch.Generator().manual_seed(0)
    >>> truth = torch.rand(6, 2, generator=generator) @ torch.rand(2, 40, generator=generator)
    >>> W, H = nmf_multiplicative(truth, 2, 500, generator)
    >>> bool((W >= 0).all() and (H >= 0).all()), relative_error(truth, W, H) < 0.02
    (True, True)
    """
    scale = spectrogram.mean().clamp_min(EPSILON).sqrt()
    freq, frames = spectrogram.shape
    dictionary = scale * torch.rand(freq, components, generator=generator).to(spectrogram)
    activations = scale * torch.rand(components, frames, generator=generator).to(spectrogram)
    for _ in range(iterations):
        activations *= (dictionary.T @ spectrogram) / (dictionary.T @ dictionary @ activations).clamp_min(EPSILON)
        dictionary *= (spectrogram @ activations.T) / (dictionary @ (activations @ activations.T)).clamp_min(EPSILON)
        peaks = dictionary.amax(dim=0).clamp_min(EPSILON)  # [components]
        dictionary /= peaks
        activations *= peaks[:, None]
    return dictionary, activations


def relative_error(spectrogram, dictionary, activations):
    """``||V - W H||_F / ||V||_F``."""
    return float((spectrogram - dictionary @ activations).norm() / spectrogram.norm().clamp_min(EPSILON))


def save_dictionary_figure(dictionary, path):
    """A picture of the dictionary ``[freq, components]``: one column per component."""
    figure = Figure(figsize=(8, 4))
    axis = figure.subplots()
    shown = axis.imshow(dictionary.cpu().numpy(), origin="lower", aspect="auto")
    axis.set_xlabel("component")
    axis.set_ylabel("frequency bin")
    axis.set_title("NMF dictionary W (log1p|STFT|)")
    figure.colorbar(shown, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def learn_dictionary(hparams, datasets, device):
    """Learns ``W`` on the training set and writes it, the report and the picture; returns the report."""
    generator = torch.Generator().manual_seed(hparams["seed"])
    spectrogram = training_frames(datasets["train"], hparams, device, generator)
    logger.info("NMF: %d components on %d frames of %d bins.", hparams["nmf_components"], *spectrogram.shape[::-1])
    dictionary, activations = nmf_multiplicative(
        spectrogram, hparams["nmf_components"], hparams["nmf_iterations"], generator
    )
    report = {
        "components": hparams["nmf_components"],
        "frames": spectrogram.shape[1],
        "iterations": hparams["nmf_iterations"],
        "relative_error": relative_error(spectrogram, dictionary, activations),
    }
    decoder = hparams["nmf_decoder"]
    with torch.no_grad():
        decoder.W.copy_(dictionary.cpu())
    folder = os.path.dirname(os.path.abspath(hparams["nmf_dictionary"]))
    os.makedirs(folder, exist_ok=True)
    torch.save(decoder.state_dict(), hparams["nmf_dictionary"])
    with open(os.path.join(folder, "nmf_report.json"), "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    save_dictionary_figure(dictionary, os.path.join(folder, "nmf_dictionary.png"))
    logger.info("NMF dictionary saved to %s; relative error %.4f.", hparams["nmf_dictionary"], report["relative_error"])
    return report

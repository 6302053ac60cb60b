"""Interpret sounds from Python, the SpeechBrain way: ``LMACInterpreter``.

    from lmac_interpreter import LMACInterpreter
    interpreter = LMACInterpreter.from_hparams(source="results/demo/lmac/export", savedir="pretrained/lmac")
    result = interpreter.interpret_file("dog_bark.wav", savedir="interpretations")
    result.labels, result.probabilities.shape, result.interpretation.shape

The source is a folder written by ``export_interpreter.py`` (a
``hyperparams.yaml`` and the weights, in the layout of a SpeechBrain model
card; this repository's modules must be importable). ``eval.py`` interprets
files through the same class, built from a training run's configuration.
"""

import csv
import dataclasses
import json
import os

import soundfile as sf
import torch
from speechbrain.inference.interfaces import Pretrained

from esc50_prepare import peak_normalize, read_audio_mono
from features import spectral_features
from interpreter_brain import inverted_interpretation, save_spectrogram_figure
from mask_methods import LMACMask
from wham_prepare import fit_length


def class_names_from_encoder(encoder, n_classes):
    """Name of each class index: the label of a ``CategoricalEncoder``, or ``class_<i>`` where it has none.

    Example
    -------
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> encoder = CategoricalEncoder()
    >>> encoder.update_from_iterable(["dog"])
    >>> class_names_from_encoder(encoder, 2), class_names_from_encoder(None, 2)
    (['dog', 'class_1'], ['class_0', 'class_1'])
    """
    names = [f"class_{index}" for index in range(n_classes)]
    for index, label in (encoder.ind2lab.items() if encoder is not None else ()):
        if index < n_classes:
            names[index] = label
    return names


@dataclasses.dataclass
class Interpretation:
    """What ``LMACInterpreter`` returns for a batch (or for one file, a batch of one).

    ``interpretation``: the listenable interpretation, ``[batch, samples]``
    at ``sample_rate``; ``mask``: ``[batch, frames, freq]`` in ``[0, 1]``;
    ``probabilities``: the classifier's, ``[batch, n_classes]``;
    ``labels``: the predicted class names, one per example; for a file,
    ``timeline``: per analysis window its ``start_s``, ``end_s``, top ``class``
    and its ``probability`` (None for a batch).
    """

    interpretation: torch.Tensor
    mask: torch.Tensor
    probabilities: torch.Tensor
    labels: list
    timeline: list = None


def analysis_windows(waveform, window, hop):
    """Splits ``waveform`` ``[samples]`` into windows of ``window`` samples every ``hop`` samples.

    The waveform is zero-padded at the end so that the windows cover it.

    Returns
    -------
    windows : torch.Tensor
        ``[count, window]``.
    padded_length : int
    """
    count = 1 + max(0, -(-(waveform.shape[0] - window) // hop))
    padded_length = window + (count - 1) * hop
    padded = fit_length(waveform, padded_length)
    return padded.unfold(0, window, hop), padded_length


def stitch_masks(masks, hop_frames, num_frames):
    """Cross-fades window masks ``[count, frames, freq]`` placed every ``hop_frames`` into ``[num_frames, freq]``.

    Each window's frames are weighted by a raised-sine (never zero) and the
    sum is divided by the summed weights, so overlapping windows blend
    smoothly and a lone window is returned unchanged.

    Example
    -------
    >>> stitch_masks(torch.stack([torch.zeros(4, 1), torch.ones(4, 1)]), 2, 6).flatten()
    tensor([0.0000, 0.0000, 0.1534, 0.8466, 1.0000, 1.0000])
    """
    count, frames, freq = masks.shape
    weights = 0.01 + torch.sin(torch.pi * (torch.arange(frames) + 0.5) / frames) ** 2  # [frames]
    weights = weights.to(masks.dtype).to(masks.device)
    total = torch.zeros(num_frames, freq, dtype=masks.dtype, device=masks.device)
    norm = torch.zeros(num_frames, 1, dtype=masks.dtype, device=masks.device)
    for index in range(count):
        start = index * hop_frames
        stop = min(start + frames, num_frames)
        total[start:stop] += weights[: stop - start, None] * masks[index, : stop - start]
        norm[start:stop] += weights[: stop - start, None]
    return total / norm.clamp_min(1e-12)


class LMACInterpreter(Pretrained):
    """An L-MAC interpreter of a frozen classifier, for inference (SpeechBrain's ``Pretrained``).

    Files of any format libsndfile reads, rate, channel count and length are
    cut into windows of the training clip length every half clip (a whole
    number of STFT hops, so window frames line up with the file's); the
    window masks are cross-faded into one mask over the whole file, and one
    inverse STFT gives an interpretation without seams.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.inference.interfaces.Pretrained``: ``modules``
        (``MODULES_NEEDED``), ``hparams`` (``HPARAMS_NEEDED``), ``run_opts``.
    mask_method : mask_methods.MaskMethod or None
        Another method's masks instead of the decoder's (``eval.py --int_method``).
    class_names : list of str or None
        Name of each class index; by default from ``hparams["label_encoder"]``, else ``class_<i>``.
    """

    MODULES_NEEDED = ["compute_stft", "compute_istft", "compute_fbank", "classifier", "psi"]
    HPARAMS_NEEDED = ["sample_rate", "signal_length_s", "batch_size", "n_classes"]

    def __init__(self, *args, mask_method=None, class_names=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_method = mask_method
        self.class_names = list(class_names) if class_names is not None else self._encoder_class_names()
        self.stft_hop = self.mods.compute_stft.hop_length
        self.window = int(round(self.hparams.signal_length_s * self.hparams.sample_rate))
        self.hop_frames = self.window // 2 // self.stft_hop
        self.used_names = set()

    def _encoder_class_names(self):
        return class_names_from_encoder(getattr(self.hparams, "label_encoder", None), self.hparams.n_classes)

    def analyse_batch(self, wavs):
        """``wavs`` ``[batch, samples]``'s features, masks ``[batch, frames, freq]`` and class probabilities
        ``[batch, n_classes]``.

        The models run under SpeechBrain's inference precision; the mask and
        probabilities are float32. The mask is ``mask_method``'s, or the decoder's.
        """
        method = self.mask_method if self.mask_method is not None else LMACMask(self.mods.psi)
        with torch.no_grad(), self.inference_ctx:
            features = spectral_features(wavs.to(self.device), self.mods.compute_stft, self.mods.compute_fbank)
            logits, feature_maps = self.mods.classifier(features.mel_input)
            mask = method.mask(features, logits, feature_maps)
        return features, mask.float(), torch.softmax(logits.float(), dim=1)

    def interpret_batch(self, wavs, wav_lens=None):
        """Interprets a batch of clips at ``sample_rate`` (each peak-normalised, as in training).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``, mono.
        wav_lens : torch.Tensor or None
            ``[batch]`` relative lengths (SpeechBrain's convention); past its
            length an example's mask and interpretation are zero.

        Returns
        -------
        Interpretation
        """
        wavs = peak_normalize(wavs.float()).to(self.device)
        features, mask, probabilities = self.analyse_batch(wavs)
        with torch.no_grad():
            interpretation = inverted_interpretation(mask, features, wavs.shape[1], self.mods.compute_istft)
        if wav_lens is not None:
            samples = (wav_lens.to(self.device) * wavs.shape[1]).round()  # [batch]
            interpretation = interpretation * (torch.arange(wavs.shape[1], device=self.device) < samples[:, None])
            frames = samples // self.stft_hop + 1
            mask = mask * (torch.arange(mask.shape[1], device=self.device) < frames[:, None])[:, :, None]
        return Interpretation(interpretation, mask, probabilities, self.labels_of(probabilities))

    def labels_of(self, probabilities):
        """The names of the most probable classes of ``probabilities`` ``[batch, n_classes]``."""
        return [self.class_names[index] for index in probabilities.argmax(dim=1).tolist()]

    def interpret_file(self, path, savedir=None):
        """Interprets one file; with ``savedir``, writes what ``eval.py`` writes for it there.

        Returns
        -------
        Interpretation
            A batch of one: the interpretation has the file's duration at
            ``sample_rate``, the mask its frames; the probabilities are
            averaged over the windows.

        Raises
        ------
        ValueError
            The file cannot be read, or holds no samples; the message names it.
        """
        result, waveform, log_mag = self.analyse_file(path)
        if savedir is not None:
            self.write_outputs(path, waveform, log_mag, result, savedir)
        return result

    def analyse_file(self, path):
        """``interpret_file``'s work, writing nothing.

        Returns
        -------
        result : Interpretation
        waveform : torch.Tensor
            The peak-normalised mono input at ``sample_rate``, ``[samples]``.
        log_mag : torch.Tensor
            Its ``log1p|STFT|``, ``[frames, freq]``.
        """
        try:
            waveform = read_audio_mono(path, self.hparams.sample_rate)  # [samples]
        except (RuntimeError, OSError) as error:  # soundfile's LibsndfileError is a RuntimeError
            raise ValueError(f"Cannot read {path}: {error}") from error
        if waveform.shape[0] == 0:
            raise ValueError(f"{path} holds no audio samples.")
        waveform = peak_normalize(waveform)
        windows, padded_length = analysis_windows(waveform, self.window, self.hop_frames * self.stft_hop)
        _, masks, probabilities = zip(*(self.analyse_batch(chunk) for chunk in windows.split(self.hparams.batch_size)))
        padded = fit_length(waveform, padded_length)[None].to(self.device)
        with torch.no_grad():
            features = spectral_features(padded, self.mods.compute_stft, self.mods.compute_fbank)
            mask = stitch_masks(torch.cat(masks), self.hop_frames, features.log_mag.shape[1])
            interpretation = inverted_interpretation(mask[None], features, padded_length, self.mods.compute_istft)[0]
        num_frames = waveform.shape[0] // self.stft_hop + 1  # frames of the unpadded file (centred STFT)
        window_probabilities = torch.cat(probabilities)  # [windows, n_classes]
        probability = window_probabilities.mean(dim=0, keepdim=True)
        result = Interpretation(
            interpretation[None, : waveform.shape[0]], mask[None, :num_frames], probability, self.labels_of(probability),
            self.timeline(window_probabilities, waveform.shape[0]),
        )
        return result, waveform, features.log_mag[0, :num_frames]

    def timeline(self, window_probabilities, num_samples):
        """Per analysis window of a file of ``num_samples``: start and end (s), top class and its probability.

        Arguments
        ---------
        window_probabilities : torch.Tensor
            ``[windows, n_classes]``, in the order of ``analysis_windows``.
        num_samples : int

        Returns
        -------
        list of dict
        """
        rate, hop = self.hparams.sample_rate, self.hop_frames * self.stft_hop
        top, classes = window_probabilities.max(dim=1)
        return [
            {
                "start_s": index * hop / rate,
                "end_s": min(index * hop + self.window, num_samples) / rate,
                "class": self.class_names[class_index],
                "probability": probability,
            }
            for index, (probability, class_index) in enumerate(zip(top.tolist(), classes.tolist()))
        ]

    def output_name(self, path):
        """A name for the outputs of ``path``, unique among the files this interpreter wrote."""
        stem, extension = os.path.splitext(os.path.basename(path))
        name = stem if stem not in self.used_names else f"{stem}_{extension.lstrip('.')}"
        while name in self.used_names:
            name += "_"
        self.used_names.add(name)
        return name

    def write_outputs(self, path, waveform, log_mag, result, savedir):
        """Writes the input copy, interpretation, picture and top-5 JSON of one file; returns its name and record."""
        os.makedirs(savedir, exist_ok=True)
        name = self.output_name(path)
        prefix = os.path.join(savedir, name)
        rate = self.hparams.sample_rate
        sf.write(f"{prefix}_input.wav", waveform.cpu().numpy(), rate)
        sf.write(f"{prefix}_interpretation.wav", result.interpretation[0].cpu().numpy(), rate)
        save_spectrogram_figure(log_mag, result.mask[0], f"{prefix}_spectrogram.png", name, self.stft_hop, rate)
        top = torch.topk(result.probabilities[0], k=min(5, result.probabilities.shape[1]))
        record = {
            "file": os.path.abspath(path),
            "duration_s": waveform.shape[0] / rate,
            "top5": [
                {"class": self.class_names[index], "probability": float(probability)}
                for probability, index in zip(top.values.tolist(), top.indices.tolist())
            ],
        }
        with open(f"{prefix}.json", "w", encoding="utf-8") as file:
            json.dump(record, file, indent=2)
        write_timeline(result.timeline, prefix)
        return name, record


def write_timeline(timeline, prefix):
    """Writes ``<prefix>_timeline.csv`` and ``<prefix>_timeline.json``: what the classifier heard when."""
    with open(f"{prefix}_timeline.json", "w", encoding="utf-8") as file:
        json.dump(timeline, file, indent=2)
    with open(f"{prefix}_timeline.csv", "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["start_s", "end_s", "class", "probability"])
        writer.writeheader()
        writer.writerows(timeline)

"""Interpret sounds from Python, the SpeechBrain way: ``LMACInterpreter``.

    from lmac.inference import LMACInterpreter
    interpreter = LMACInterpreter.from_hparams(source="results/demo/lmac/export", savedir="pretrained/lmac")
    result = interpreter.interpret_file("dog_bark.wav", savedir="interpretations")
    result.labels, result.probabilities.shape, result.interpretation.shape

The source is a folder written by ``export_interpreter.py`` (a
``hyperparams.yaml`` and the weights, in the layout of a SpeechBrain model
card; this repository's modules must be importable). ``eval.py`` interprets
files through the same class, built from a training run's configuration.
"""

import collections
import csv
import dataclasses
import json
import logging
import os
import re

import soundfile as sf
import torch
from speechbrain.inference.interfaces import Pretrained
from tqdm import tqdm

from lmac.audio.io import peak_normalize
from lmac.audio.stream import ResampledAudio
from lmac.compat import old_module_names
from lmac.features import spectral_features
from lmac.masking import inverted_interpretation
from lmac.methods import LMACMask
from lmac.reporting.figures import save_spectrogram_figure

logger = logging.getLogger(__name__)

# Analysis-window hops interpreted at a time in a file (80 s of 5 s windows): what bounds the memory.
PIECE_WINDOWS = 32
# Frames of the longest picture drawn at full resolution; longer files are averaged down to it.
MAX_PICTURE_FRAMES = 1024
# What a from_hparams savedir was fetched for: the source and the entries fetched.
SAVEDIR_RECORD = "lmac_source.json"


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
    for index, label in encoder.ind2lab.items() if encoder is not None else ():
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
    and its ``probability`` (None for a batch); ``outputs``: the files
    written for a file, by kind (``input``, ``interpretation``, ``image``,
    ``record``, ``timeline_csv``, ``timeline_json``), or None.
    """

    interpretation: torch.Tensor
    mask: torch.Tensor
    probabilities: torch.Tensor
    labels: list
    timeline: list = None
    outputs: dict = None


@dataclasses.dataclass
class FilePiece:
    """One piece of a file's interpretation, in order (``LMACInterpreter.file_pieces``).

    ``waveform`` and ``interpretation``: ``[samples]`` of the piece (the
    peak-normalised input and its interpretation); ``log_mag`` and ``mask``:
    ``[frames, freq]`` of its frames; ``window_probabilities``:
    ``[windows, n_classes]`` of the analysis windows that start in it.
    """

    waveform: torch.Tensor
    interpretation: torch.Tensor
    log_mag: torch.Tensor
    mask: torch.Tensor
    window_probabilities: torch.Tensor


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
    mask_method : lmac.methods.MaskMethod or None
        Another method's masks instead of the decoder's (``eval.py --int_method``).
    class_names : list of str or None
        Name of each class index; by default from ``hparams["label_encoder"]``, else ``class_<i>``.
    """

    MODULES_NEEDED = ["compute_stft", "compute_istft", "classifier_input", "classifier", "psi"]
    HPARAMS_NEEDED = ["sample_rate", "signal_length_s", "batch_size", "n_classes"]

    def __init__(self, *args, mask_method=None, class_names=None, **kwargs):
        super().__init__(*args, **kwargs)
        missing = [name for name in self.MODULES_NEEDED if name not in self.mods]
        if missing:
            raise ValueError(
                f"The interpreter's modules lack {missing}; an export written before classifier families has "
                "compute_fbank instead of classifier_input: export the run again with export_interpreter.py."
            )
        self.mask_method = mask_method
        self.class_names = list(class_names) if class_names is not None else self._encoder_class_names()
        self.stft_hop = self.mods.compute_stft.hop_length
        self.window = int(round(self.hparams.signal_length_s * self.hparams.sample_rate))
        self.hop_frames = self.window // 2 // self.stft_hop
        self.piece_windows = PIECE_WINDOWS

    @classmethod
    def from_hparams(cls, source, hparams_file="hyperparams.yaml", savedir=None, **kwargs):
        """SpeechBrain's ``from_hparams``, never answering with another source's model.

        SpeechBrain's fetch keeps what a ``savedir`` already holds, so a
        savedir first used for source A would load A's model for source B:
        ``refresh_savedir`` first removes what was fetched there for another source.
        """
        if savedir is not None:
            refresh_savedir(source, savedir)
        with old_module_names(os.path.join(str(source), hparams_file)):  # an export of the flat layout loads too
            interpreter = super().from_hparams(source, hparams_file=hparams_file, savedir=savedir, **kwargs)
        if savedir is not None:
            record_savedir_source(source, savedir)
        return interpreter

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
            features = spectral_features(wavs.to(self.device), self.mods.compute_stft, self.mods.classifier_input)
            logits, feature_maps = self.mods.classifier(features.classifier_input)
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

    def interpret_file(self, path, savedir=None, keep_tensors=True, name=None):
        """Interprets one file piece by piece; with ``savedir``, writes what ``eval.py`` writes for it there.

        Arguments
        ---------
        path : str
            Any file libsndfile reads, any rate, channels and length.
        savedir : str or None
        keep_tensors : bool
            False for long recordings: the result then holds no
            ``interpretation`` or ``mask`` (None; with ``savedir`` they are in
            the files), and memory is bounded by a piece, not the file.
        name : str or None
            The outputs' name in ``savedir``; by default the file's stem
            (``output_names`` names the files of one call apart).

        Returns
        -------
        Interpretation
            A batch of one: the interpretation has the file's duration at
            ``sample_rate``, the mask its frames; the probabilities are
            averaged over the windows; with ``savedir``, ``outputs`` names the files.

        Raises
        ------
        ValueError
            The file cannot be read, or holds no samples; the message names it.
        """
        with ResampledAudio(path, self.hparams.sample_rate) as audio:
            peak = audio.peak()
            scale = 1.0 / peak if peak > torch.finfo(torch.float32).eps else 0.0  # as peak_normalize
            name = name if name is not None else output_names([path])[0]
            outputs = FileOutputs(self, path, audio.num_samples, savedir, name) if savedir is not None else None
            kept, probabilities = [], []
            count = self.piece_count(audio.num_samples)
            for piece in tqdm(
                self.file_pieces(audio, scale), desc=os.path.basename(path), total=count, disable=count < 4
            ):
                probabilities.append(piece.window_probabilities)
                if keep_tensors:
                    kept.append((piece.interpretation, piece.mask))
                if outputs is not None:
                    outputs.add(piece)
        window_probabilities = torch.cat(probabilities)  # [windows, n_classes]
        probability = window_probabilities.mean(dim=0, keepdim=True)
        interpretation, mask = (torch.cat(parts)[None] for parts in zip(*kept)) if keep_tensors else (None, None)
        result = Interpretation(
            interpretation,
            mask,
            probability,
            self.labels_of(probability),
            self.timeline(window_probabilities, audio.num_samples),
        )
        if outputs is not None:
            result.outputs = outputs.finish(result)
        return result

    def piece_count(self, num_samples):
        """How many pieces ``file_pieces`` cuts a file of ``num_samples`` into."""
        return -(-(num_samples // self.stft_hop + 1) // (self.piece_windows * self.hop_frames))

    def file_pieces(self, audio, scale):
        """Interprets ``audio`` (``ResampledAudio``, times ``scale``) a piece of ``piece_windows`` window hops at a time.

        The pieces join into what interpreting the whole file at once gives
        (to float rounding): each piece masks the windows that reach its
        frames or their ``margin`` (the frames its samples' inverse STFT
        reads), cross-fades them as ``stitch_masks`` does, and inverts a span
        wide enough that its own edges fall outside the piece.

        Yields
        ------
        FilePiece
            In order; together they cover the file's samples and frames once.
        """
        hop, hop_frames, window = self.stft_hop, self.hop_frames, self.window
        window_hop, window_frames = hop_frames * hop, window // hop + 1
        count = 1 + max(0, -(-(audio.num_samples - window) // window_hop))  # windows every window_hop cover the file
        padded_length = window + (count - 1) * window_hop
        total_frames = padded_length // hop + 1  # frames of the zero-padded file
        num_frames = audio.num_samples // hop + 1
        margin = -(-self.mods.compute_stft.n_fft // (2 * hop)) + 1
        piece_frames = self.piece_windows * hop_frames
        for first in range(0, num_frames, piece_frames):
            last = min(first + piece_frames, num_frames)
            need = max(0, first - margin), min(total_frames, last + margin)  # frames whose mask the piece reads
            span = max(0, first - 2 * margin), min(total_frames, last + 2 * margin)  # frames whose STFT it takes
            windows = range(
                max(0, -(-(need[0] - window_frames + 1) // hop_frames)), min(count, (need[1] - 1) // hop_frames + 1)
            )
            segment_stop = padded_length if span[1] == total_frames else (span[1] - 1) * hop
            start = min(windows[0] * window_hop, span[0] * hop)
            samples = audio.read(start, max(windows[-1] * window_hop + window, segment_stop)) * scale
            clips = torch.stack([samples[index * window_hop - start :][:window] for index in windows])
            _, masks, probabilities = zip(
                *(self.analyse_batch(chunk) for chunk in clips.split(self.hparams.batch_size))
            )
            with torch.no_grad():
                stitched = stitch_masks(torch.cat(masks), hop_frames, (len(windows) - 1) * hop_frames + window_frames)
                offset = windows[0] * hop_frames
                segment = samples[span[0] * hop - start : segment_stop - start][None].to(self.device)
                features = spectral_features(segment, self.mods.compute_stft, self.mods.classifier_input)
                mask = torch.zeros_like(features.log_mag[0])  # [span frames, freq]
                mask[need[0] - span[0] : need[1] - span[0]] = stitched[need[0] - offset : need[1] - offset]
                interpretation = inverted_interpretation(
                    mask[None], features, segment.shape[1], self.mods.compute_istft
                )[0]
            samples_of_piece = slice(first * hop, min(last * hop, audio.num_samples))
            owned = [position for position, index in enumerate(windows) if first <= index * hop_frames < last]
            yield FilePiece(
                waveform=samples[samples_of_piece.start - start : samples_of_piece.stop - start],
                interpretation=interpretation[
                    samples_of_piece.start - span[0] * hop : samples_of_piece.stop - span[0] * hop
                ],
                log_mag=features.log_mag[0, first - span[0] : last - span[0]],
                mask=mask[first - span[0] : last - span[0]],
                window_probabilities=torch.cat(probabilities)[owned],
            )

    def timeline(self, window_probabilities, num_samples):
        """Per analysis window of a file of ``num_samples``: start and end (s), top class and its probability.

        Arguments
        ---------
        window_probabilities : torch.Tensor
            ``[windows, n_classes]``: windows of ``window`` samples every ``hop_frames`` STFT hops.
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


def output_names(paths):
    """The outputs' name of each file of ``paths``, from the files alone: the stem, unless several share it.

    Files that share a stem are named by their path from the folder they
    share, with ``/`` and ``.`` written ``_``.

    Example
    -------
    >>> output_names(["a/dog.wav", "b/dog.wav", "a/dog.flac", "a/cat.wav"])
    ['a_dog_wav', 'b_dog_wav', 'a_dog_flac', 'cat']
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    counts = collections.Counter(stems)
    shared_folder = {
        stem: os.path.commonpath(
            [os.path.dirname(os.path.abspath(path)) for path, other in zip(paths, stems) if other == stem]
        )
        for stem, count in counts.items()
        if count > 1
    }
    return [
        stem
        if counts[stem] == 1
        else re.sub(r"[./\\]", "_", os.path.relpath(os.path.abspath(path), shared_folder[stem]))
        for path, stem in zip(paths, stems)
    ]


def source_key(source):
    """How a source is recorded: a local folder by its real path, anything else (a HuggingFace id) as given."""
    source = str(source)
    return os.path.realpath(source) if os.path.exists(source) else source


def read_savedir_record(savedir):
    """``savedir``'s ``SAVEDIR_RECORD``: ``{"source": ..., "entries": [...]}``, or an empty record."""
    path = os.path.join(savedir, SAVEDIR_RECORD)
    if not os.path.isfile(path):
        return {"source": None, "entries": []}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def refresh_savedir(source, savedir):
    """Removes from ``savedir`` what was fetched there for a source other than ``source``.

    Those are the entries its record lists, and links (SpeechBrain's fetch
    links local files): removing them loses nothing. Any other file stays.

    Raises
    ------
    ValueError
        ``savedir`` holds a file that was not fetched for an interpreter; the message names it.
    """
    record = read_savedir_record(savedir)
    if record["source"] == source_key(source) or not os.path.isdir(savedir):
        return
    for entry in sorted(os.listdir(savedir)):
        path = os.path.join(savedir, entry)
        if entry == SAVEDIR_RECORD:
            continue
        if not (os.path.islink(path) or entry in record["entries"]):
            raise ValueError(
                f"savedir={savedir!r} holds {entry!r}, which was not fetched for an interpreter; "
                f"pass a new or empty savedir to load {source!r}."
            )
        os.remove(path)
    if record["source"] is not None:
        logger.info("savedir %s held the interpreter of %s; refreshed for %s.", savedir, record["source"], source)


def record_savedir_source(source, savedir):
    """Writes ``savedir``'s ``SAVEDIR_RECORD``: ``source`` and the entries fetched for it."""
    entries = sorted(entry for entry in os.listdir(savedir) if entry != SAVEDIR_RECORD)
    with open(os.path.join(savedir, SAVEDIR_RECORD), "w", encoding="utf-8") as file:
        json.dump({"source": source_key(source), "entries": entries}, file, indent=2)


def write_timeline(timeline, prefix):
    """Writes ``<prefix>_timeline.csv`` and ``<prefix>_timeline.json``: what the classifier heard when."""
    with open(f"{prefix}_timeline.json", "w", encoding="utf-8") as file:
        json.dump(timeline, file, indent=2)
    with open(f"{prefix}_timeline.csv", "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["start_s", "end_s", "class", "probability"])
        writer.writeheader()
        writer.writerows(timeline)


class FileOutputs:
    """The files ``eval.py`` writes for one interpreted file, written piece by piece.

    ``<name>_input.wav`` (the peak-normalised mono input) and
    ``<name>_interpretation.wav`` grow with each piece; the picture (at most
    ``MAX_PICTURE_FRAMES`` columns, frames averaged in groups for long files),
    ``<name>.json`` (top 5) and the timeline are written by ``finish``.

    Arguments
    ---------
    interpreter : LMACInterpreter
    path : str
        The interpreted file.
    num_samples : int
        Its length at ``sample_rate``.
    savedir : str
    name : str
        The outputs' name (``<savedir>/<name>_input.wav``, ...).
    """

    def __init__(self, interpreter, path, num_samples, savedir, name):
        os.makedirs(savedir, exist_ok=True)
        self.interpreter, self.path, self.num_samples, self.name = interpreter, path, num_samples, name
        self.prefix = os.path.join(savedir, self.name)
        rate = interpreter.hparams.sample_rate
        self.sounds = [sf.SoundFile(f"{self.prefix}_{kind}.wav", "w", rate, 1) for kind in ("input", "interpretation")]
        frames = num_samples // interpreter.stft_hop + 1
        self.group = -(-frames // MAX_PICTURE_FRAMES)
        self.columns = ColumnAverages(self.group), ColumnAverages(self.group)

    def add(self, piece):
        """Appends a ``FilePiece``."""
        for sound, samples in zip(self.sounds, (piece.waveform, piece.interpretation)):
            sound.write(samples.cpu().numpy())
        for columns, frames in zip(self.columns, (piece.log_mag, piece.mask)):
            columns.add(frames)

    def finish(self, result):
        """Closes the sound files, writes the picture, top 5 and timeline of ``result``; returns the paths."""
        for sound in self.sounds:
            sound.close()
        interpreter, rate = self.interpreter, self.interpreter.hparams.sample_rate
        log_mag, mask = (columns.result() for columns in self.columns)
        image = f"{self.prefix}_spectrogram.png"
        save_spectrogram_figure(log_mag, mask, image, self.name, interpreter.stft_hop * self.group, rate)
        top = torch.topk(result.probabilities[0], k=min(5, result.probabilities.shape[1]))
        record = {
            "file": os.path.abspath(self.path),
            "duration_s": self.num_samples / rate,
            "top5": [
                {"class": interpreter.class_names[index], "probability": float(probability)}
                for probability, index in zip(top.values.tolist(), top.indices.tolist())
            ],
        }
        with open(f"{self.prefix}.json", "w", encoding="utf-8") as file:
            json.dump(record, file, indent=2)
        write_timeline(result.timeline, self.prefix)
        return {
            "input": f"{self.prefix}_input.wav",
            "interpretation": f"{self.prefix}_interpretation.wav",
            "image": image,
            "record": f"{self.prefix}.json",
            "timeline_csv": f"{self.prefix}_timeline.csv",
            "timeline_json": f"{self.prefix}_timeline.json",
        }


class ColumnAverages:
    """Frames ``[frames, freq]`` added in order, averaged in consecutive groups of ``group`` (the last may be shorter).

    Example
    -------
    >>> columns = ColumnAverages(2)
    >>> columns.add(torch.tensor([[1.0], [3.0], [5.0]]))
    >>> columns.add(torch.tensor([[7.0], [9.0]]))
    >>> columns.result().flatten()
    tensor([2., 6., 9.])
    """

    def __init__(self, group):
        self.group, self.done, self.pending = group, [], None

    def add(self, frames):
        """Adds ``frames`` ``[frames, freq]``."""
        frames = frames.detach().float().cpu()
        pending = frames if self.pending is None else torch.cat([self.pending, frames])
        whole = pending.shape[0] // self.group * self.group
        self.done.append(pending[:whole].reshape(-1, self.group, pending.shape[1]).mean(dim=1))
        self.pending = pending[whole:]

    def result(self):
        """The averages, ``[ceil(frames / group), freq]``."""
        tail = [self.pending.mean(dim=0, keepdim=True)] if self.pending.shape[0] else []
        return torch.cat(self.done + tail)

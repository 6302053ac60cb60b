"""InterpreterBrain: the base of interpreters of a frozen audio classifier.

It owns everything an interpreter shares with any other: the features
(STFT, ``log1p`` magnitude, ``log1p``-mel classifier input), the frozen
classifier, the inversion of a masked spectrogram to a waveform with the
input's phase, listenable outputs, the evaluation metrics of
``LMAC_SPEC.md``, stage logging, learning-rate annealing and checkpoints.
Subclasses (``train_lmac.LMAC``) add the decoder's forward pass and loss.
"""

import dataclasses
import functools
import inspect
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import soundfile as sf
import speechbrain as sb
import torch
from matplotlib.figure import Figure
from speechbrain.utils.checkpoints import Checkpointer

from features import SpectralFeatures, mel_input_from_log_magnitude, spectral_features

logger = logging.getLogger(__name__)

# Written into a checkpoint folder once every file of it is saved.
COMPLETE_MARKER = "COMPLETE"
# The validation statistic that selects the best checkpoint (lower is better).
BEST_CHECKPOINT_KEY = "loss"
INTERPRETATION_METRICS = ("fid_in", "FF", "AI", "AD", "AG", "SPS", "COMP")
# The feature modules (``features.Device*``) every interpreter brain holds next to its models.
FEATURE_MODULES = ("compute_stft", "compute_istft", "compute_fbank")


class CompleteCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` that only trusts checkpoints whose saving finished.

    SpeechBrain writes a checkpoint's meta file first and its parameter files
    after it, so a run killed while saving leaves a folder that looks like a
    checkpoint. This one writes ``COMPLETE`` last and lists (so finds,
    recovers, keeps and deletes) only folders that have it; an interrupted
    one is left on disk, ignored, with a warning.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.utils.checkpoints.Checkpointer``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reported_incomplete = set()

    def save_checkpoint(self, *args, **kwargs):
        """Saves as SpeechBrain does, then marks the checkpoint complete (main process)."""
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None:
            with open(os.path.join(checkpoint.path, COMPLETE_MARKER), "w", encoding="utf-8") as file:
                file.write("all files of this checkpoint were written\n")
        return checkpoint

    def list_checkpoints(self):
        """The complete checkpoints; incomplete ones are reported once and left alone."""
        complete = []
        for checkpoint in super().list_checkpoints():
            if os.path.isfile(os.path.join(checkpoint.path, COMPLETE_MARKER)):
                complete.append(checkpoint)
            elif checkpoint.path not in self._reported_incomplete:
                self._reported_incomplete.add(checkpoint.path)
                logger.warning("Ignoring %s: its saving was interrupted, so it is incomplete.", checkpoint.path)
        return complete


class FrozenClassifier(torch.nn.Module):
    """A classifier (CNN14 embedding + linear head) that stays frozen.

    Its weights never take gradients and it stays in eval mode even when
    ``Brain`` calls ``modules.train()``; gradients still flow through it to
    its input, which is how the decoder learns.

    Arguments
    ---------
    embedding_model : torch.nn.Module
        Maps ``[batch, frames, n_mels]`` to ``([batch, 1, emb_dim], feature_maps)``.
    classifier : torch.nn.Module
        Maps ``[batch, 1, emb_dim]`` to ``[batch, 1, n_classes]``.

    Example
    -------
    >>> from speechbrain.lobes.models.Cnn14 import Cnn14
    >>> from speechbrain.nnet.linear import Linear
    >>> frozen = FrozenClassifier(Cnn14(mel_bins=32, emb_dim=16, return_reps=True), Linear(n_neurons=3, input_size=16))
    >>> logits, feature_maps = frozen(torch.rand(2, 40, 32))
    >>> logits.shape, len(feature_maps), frozen.train().training
    (torch.Size([2, 3]), 4, False)
    """

    def __init__(self, embedding_model, classifier):
        super().__init__()
        self.embedding_model = embedding_model
        self.classifier = classifier
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):
        """Ignores ``mode``: the classifier always stays in eval mode."""
        return super().train(False)

    def forward(self, mel_input):
        """Classifies ``mel_input`` ``[batch, frames, n_mels]``: logits ``[batch, n_classes]`` and feature maps."""
        embedding, feature_maps = self.embedding_model(mel_input)
        return self.classifier(embedding).squeeze(1), feature_maps


def end_distributed_run():
    """Waits for every DDP process, then closes the process group (no-op without DDP).

    Leaving it to interpreter shutdown can abort a process whose gloo threads
    are still running ("terminate called without an active exception").
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def set_weight_layout(module, forward_only):
    """Channels-last (NHWC) 4-D weights for forward-only work, PyTorch's default order otherwise; returns ``module``.

    The outputs are the same. On 2 CPU cores (oneDNN, batch 8, 5 s clips),
    NHWC makes CNN14's forward pass about 1.4x faster and L-MAC's decoder's
    1.1x (width 1) to 1.6x (width 1/16), but the decoder's forward and
    backward passes together 1.5x slower at width 1: training and the
    gradient baselines keep the default order.

    Arguments
    ---------
    module : torch.nn.Module
    forward_only : bool
        True where nothing will be differentiated through ``module``.
    """
    return module.to(memory_format=torch.channels_last if forward_only else torch.contiguous_format)


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


def masked_log_magnitudes(mask, log_mag):
    """Masked-in ``M * L`` and masked-out ``(1 - M) * L``, cropped to the mask's frames.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames', freq]`` with values in ``[0, 1]``.
    log_mag : torch.Tensor
        ``[batch, frames, freq]``, ``frames >= frames'``.

    Returns
    -------
    tuple of torch.Tensor
        Both ``[batch, frames', freq]``.

    Example
    -------
    >>> masked_in, masked_out = masked_log_magnitudes(torch.full((1, 2, 3), 0.25), torch.ones(1, 4, 3))
    >>> masked_in.shape, masked_in[0, 0, 0].item(), masked_out[0, 0, 0].item()
    (torch.Size([1, 2, 3]), 0.25, 0.75)
    """
    cropped = crop_frames(log_mag, mask.shape[1])
    return mask * cropped, (1 - mask) * cropped


def probabilities_of_decision(logits, logits_masked_in, logits_masked_out):
    """Softmax probabilities of the classifier's own decision ``c = argmax logits``.

    Each probability goes through exactly one softmax.

    Arguments
    ---------
    logits, logits_masked_in, logits_masked_out : torch.Tensor
        ``[batch, n_classes]``.

    Returns
    -------
    decision : torch.Tensor
        ``c``, ``[batch]``.
    p, q_in, q_out : torch.Tensor
        ``p_c``, ``q_in_c``, ``q_out_c``, each ``[batch]``.
    """
    decision = logits.argmax(dim=1, keepdim=True)
    p, q_in, q_out = (
        torch.softmax(values.float(), dim=1).gather(1, decision).squeeze(1)
        for values in (logits, logits_masked_in, logits_masked_out)
    )
    return decision.squeeze(1), p, q_in, q_out


def fidelity_scores(logits, logits_masked_in, logits_masked_out):
    """Per-example Fid-In, FF, AI, AD and AG of ``LMAC_SPEC.md``.

    Arguments
    ---------
    logits, logits_masked_in, logits_masked_out : torch.Tensor
        ``[batch, n_classes]``: the classifier on the input, the masked-in
        and the masked-out input.

    Returns
    -------
    dict of str to torch.Tensor
        ``fid_in``, ``FF``, ``AI``, ``AD``, ``AG``, each ``[batch]``.

    Example
    -------
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    >>> masked_in = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    >>> scores = fidelity_scores(logits, masked_in, masked_in)
    >>> {name: round(value.item(), 3) for name, value in scores.items()}
    {'fid_in': 0.0, 'FF': 0.25, 'AI': 0.0, 'AD': 50.0, 'AG': 0.0}
    """
    decision, p, q_in, q_out = probabilities_of_decision(logits, logits_masked_in, logits_masked_out)
    masked_in_decision = logits_masked_in.argmax(dim=1)
    tiny = torch.finfo(p.dtype).tiny
    return {
        "fid_in": (masked_in_decision == decision).float(),
        "FF": p - q_out,
        "AI": 100.0 * (q_in > p).float(),
        "AD": 100.0 * torch.clamp(p - q_in, min=0) / p.clamp_min(tiny),
        "AG": 100.0 * torch.clamp(q_in - p, min=0) / (1 - p).clamp_min(tiny),
    }


def sparseness(mask):
    """Gini index of ``|mask|`` per example, as ``quantus.Sparseness`` computes it.

    Like quantus, ``1e-7`` is added to every value, so an all-zero mask has
    sparseness 0 (all values equal).

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, ...]``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[0, 1)``; higher is sparser.

    Example
    -------
    >>> sparseness(torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    tensor([0.7500, 0.0000])
    """
    values = _sorted_rows(mask.detach().abs().flatten(1).float())  # [batch, n], ascending
    n = values.shape[1]
    # The Gini weights 2i - n - 1 sum to zero, so quantus' offset only enters the denominator.
    # float32 products, pairwise-summed: within 1e-6 of a float64 computation, without a float64 copy.
    numerator = torch.linalg.vecdot(values, _gini_weights(n, values.device)).double()
    return (numerator / (n * (values.sum(dim=1).double() + n * 1e-7))).float()


@functools.lru_cache(maxsize=4)
def _gini_weights(n, device):
    """``2 i - n - 1`` for ranks ``i = 1..n``, float32, ``[n]``."""
    return (2 * torch.arange(1, n + 1, dtype=torch.float64, device=device) - n - 1).float()


@functools.lru_cache(maxsize=1)
def _sorting_pool():
    return ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()))


def _sorted_rows(values):
    """Each row of a float32 ``[batch, n]`` tensor sorted ascending, on its device.

    On the CPU, NumPy's vectorised float32 sort, rows in parallel threads (it
    frees the GIL), is several times faster than ``torch.sort``; on a GPU,
    ``torch.sort`` stays there. Sorting the float32 mask before the quantus
    offset is added in float64 gives the same order, so the same Gini index.
    """
    if values.device.type != "cpu":
        return torch.sort(values, dim=1).values
    return torch.from_numpy(np.stack(list(_sorting_pool().map(np.sort, values.numpy()))))


def complexity(mask):
    """Entropy of ``|mask| / sum|mask|`` per example, as ``quantus.Complexity`` computes it.

    An all-zero mask, where quantus gives NaN, is treated as uniform: ``log(n)``.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, ...]``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[0, log(n)]``; lower is simpler.

    Example
    -------
    >>> complexity(torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    tensor([0.6931, 1.3863])
    """
    values = mask.detach().abs().flatten(1).float()
    # With shares v / T: -sum (v/T) log(v/T) = log T - sum(v log v) / T. Both sums are float32
    # pairwise sums (relative error ~1e-7); 0 log 0 = 0 through the clamp to the smallest normal.
    # quantus' 1e-12 inside the log changes the result by less than n * 1e-11.
    logs = values.clamp_min(torch.finfo(values.dtype).tiny).log_()
    v_log_v = torch.linalg.vecdot(values, logs).double()
    total = values.sum(dim=1).double()  # [batch]
    entropy = torch.log(total.clamp_min(1e-300)) - v_log_v / total.clamp_min(1e-300)
    return torch.where(total > 0, entropy, math.log(values.shape[1])).float()


def interpretation_scores(logits, logits_masked_in, logits_masked_out, mask):
    """All per-example interpretation metrics: fidelity scores, SPS and COMP.

    Arguments
    ---------
    logits, logits_masked_in, logits_masked_out : torch.Tensor
        ``[batch, n_classes]``.
    mask : torch.Tensor
        ``[batch, frames, freq]``.

    Returns
    -------
    dict of str to torch.Tensor
        Keys ``INTERPRETATION_METRICS``, each ``[batch]``.
    """
    scores = fidelity_scores(logits, logits_masked_in, logits_masked_out)
    scores["SPS"] = sparseness(mask)
    scores["COMP"] = complexity(mask)
    return scores


def event_box(num_frames, num_bins, event, hop_samples, sample_rate, n_fft):
    """Boolean ``[num_frames, num_bins]`` map of the STFT cells inside an event's box.

    Frame ``t`` is centred at ``t * hop_samples`` samples (SpeechBrain's
    centred STFT); bin ``f`` is at ``f * sample_rate / n_fft`` Hz.

    Arguments
    ---------
    num_frames, num_bins : int
    event : mapping
        ``onset_s``, ``offset_s``, ``fmin_hz``, ``fmax_hz`` (a row of ``events.csv``).
    hop_samples, sample_rate, n_fft : int

    Example
    -------
    >>> box = event_box(5, 4, {"onset_s": 0.1, "offset_s": 0.2, "fmin_hz": 10.0, "fmax_hz": 40.0}, 5, 100, 6)
    >>> box.int()  # frames at 0, 0.05, ..., 0.2 s; bins at 0, 16.7, 33.3, 50 Hz
    tensor([[0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0]], dtype=torch.int32)
    """
    times = torch.arange(num_frames) * hop_samples / sample_rate
    frequencies = torch.arange(num_bins) * sample_rate / n_fft
    in_span = (times >= event["onset_s"]) & (times <= event["offset_s"])
    in_band = (frequencies >= event["fmin_hz"]) & (frequencies <= event["fmax_hz"])
    return in_span[:, None] & in_band[None, :]


def event_boxes(events, shape, hop_samples, sample_rate, n_fft):
    """Stacked ``event_box`` maps of several clips: boolean ``[len(events), *shape]``.

    Arguments
    ---------
    events : list of mapping
        One ``events.csv`` row per clip.
    shape : tuple of int
        ``(frames, freq)`` of the masks.
    hop_samples, sample_rate, n_fft : int
    """
    return torch.stack([event_box(*shape, event, hop_samples, sample_rate, n_fft) for event in events])


def load_event_table(data_folder):
    """``<data_folder>/meta/events.csv`` indexed by clip id (file name without ``.wav``), or None when absent.

    Only the synthetic data sets of ``make_synthetic_data.py`` have it: it
    says where each clip's event is, so masks can be checked against it.
    """
    path = os.path.join(data_folder, "meta", "events.csv")
    if not os.path.isfile(path):
        return None
    events = pd.read_csv(path)
    events.index = events["filename"].str.removesuffix(".wav")
    return events


def stft_frame_count(signal_length_s, sample_rate, hop_length_ms):
    """Frames of SpeechBrain's centred STFT of a clip: ``samples // hop + 1``.

    Example
    -------
    >>> stft_frame_count(5, 16000, 11.6099)
    431
    """
    hop = int(round(sample_rate / 1000.0 * hop_length_ms))
    return int(round(signal_length_s * sample_rate)) // hop + 1


def localization_ratio(mask, box):
    """Share of the mask's mass inside the box, divided by the box's share of the cells.

    1 is chance (a uniform mask); ``1 / box share`` is a mask exactly on the box.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames, freq]``, non-negative.
    box : torch.Tensor
        ``[batch, frames, freq]``, boolean.

    Returns
    -------
    torch.Tensor
        ``[batch]``; 0 for an all-zero mask or an empty box.

    Example
    -------
    >>> box = torch.zeros(1, 4, 5, dtype=torch.bool)
    >>> box[0, :2, :2] = True
    >>> localization_ratio(torch.ones(1, 4, 5), box), localization_ratio(box.float(), box)
    (tensor([1.]), tensor([5.]))
    """
    box = box.to(mask.dtype)
    mass_inside = (mask * box).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(torch.finfo(mask.dtype).tiny)
    box_share = box.mean(dim=(1, 2))
    return torch.where(box_share > 0, mass_inside / box_share.clamp_min(torch.finfo(mask.dtype).tiny), 0.0)


def to_device(tensor, device):
    """``tensor`` on ``device``; a copy to a GPU goes through pinned memory and does not wait for queued work."""
    if torch.device(device).type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def with_pinned_memory(loader_kwargs, device_type):
    """DataLoader options with ``pin_memory=True`` on CUDA, unless the caller chose; other options unchanged.

    Example
    -------
    >>> with_pinned_memory({"batch_size": 4}, "cuda"), with_pinned_memory({"batch_size": 4}, "cpu")
    ({'batch_size': 4, 'pin_memory': True}, {'batch_size': 4})
    """
    if device_type != "cuda":
        return dict(loader_kwargs)
    return {**loader_kwargs, "pin_memory": loader_kwargs.get("pin_memory", True)}


def optimizer_class_for(opt_class, device_type):
    """``opt_class`` with ``fused=True`` on CUDA where the optimiser has a fused kernel (Adam, AdamW, SGD).

    One kernel launch per step for all weights instead of several per
    tensor group; on the CPU the optimiser is left as configured.

    Example
    -------
    >>> import functools
    >>> optimizer_class_for(functools.partial(torch.optim.Adam, lr=0.1), "cuda").keywords
    {'lr': 0.1, 'fused': True}
    """
    if opt_class is None or device_type != "cuda":
        return opt_class
    if "fused" not in inspect.signature(getattr(opt_class, "func", opt_class)).parameters:
        return opt_class
    return functools.partial(opt_class, fused=True)


class InterpreterBrain(sb.Brain):
    """Base class of interpreters of a frozen classifier.

    Expects these modules: ``classifier`` (a ``FrozenClassifier``),
    ``compute_stft``, ``compute_istft`` and ``compute_fbank`` (the
    ``features`` module's, so that their constants live on the device) and
    the interpreter's own; these hparams: ``epoch_counter``,
    ``lr_annealing``, ``train_logger``, ``interpret_period``,
    ``interpretations_per_stage``, ``output_folder`` and ``sample_rate``.
    Subclasses implement ``compute_forward`` and ``compute_objectives`` and
    call ``record_scores`` in VALID and TEST.

    On a GPU a step reads nothing back from the device but its loss (once,
    at its end, where SpeechBrain's ``fit_batch`` returns it): the scores stay
    on the device until the stage ends, batches come from pinned memory, the
    optimiser is fused and cuDNN picks its fastest algorithms for the fixed
    clip shape.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True  # every training clip has the same shape

    def init_optimizers(self):
        """SpeechBrain's optimiser set-up, with a fused optimiser on CUDA (``optimizer_class_for``)."""
        self.opt_class = optimizer_class_for(self.opt_class, self.device_type)
        super().init_optimizers()

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader, with batches in pinned memory on CUDA (``with_pinned_memory``)."""
        return super().make_dataloader(dataset, stage, ckpt_prefix, **with_pinned_memory(loader_kwargs, self.device_type))

    def fit_batch(self, batch):
        """SpeechBrain's training step; its loss, read on the host there, stops the run when not finite."""
        loss = super().fit_batch(batch)
        self.stop_if_not_finite(loss, batch, sb.Stage.TRAIN)
        return loss

    def evaluate_batch(self, batch, stage):
        """SpeechBrain's evaluation step; its loss, read on the host there, stops the run when not finite."""
        loss = super().evaluate_batch(batch, stage)
        self.stop_if_not_finite(loss, batch, stage)
        return loss

    def check_loss_isfinite(self, loss):
        """Left to ``stop_if_not_finite``: SpeechBrain's check here would read the loss mid-step, a second sync."""

    def stop_if_not_finite(self, loss, batch, stage):
        """Raises ``FloatingPointError`` naming the batch's clips when the host-side ``loss`` is not finite.

        It runs as soon as the step returns, before SpeechBrain can save a
        checkpoint, so no checkpoint ever holds the weights of that step.
        """
        if not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"The {stage.name} loss is {float(loss)} on the batch of clips {list(batch.id)}; stopping before "
                "a checkpoint is saved. Check those clips, or lower --lr."
            )

    def compute_features(self, wavs):
        """STFT, ``log1p`` magnitude and ``log1p``-mel classifier input of ``wavs`` ``[batch, samples]``."""
        return spectral_features(wavs, self.modules.compute_stft, self.modules.compute_fbank)

    def mel_input_from_log_mag(self, log_mag):
        """Classifier input ``log1p(Mel(expm1(L)))`` for a (masked) ``log1p`` magnitude ``[batch, frames, freq]``."""
        return mel_input_from_log_magnitude(log_mag, self.modules.compute_fbank)

    def classify(self, mel_input):
        """Logits ``[batch, n_classes]`` and feature maps of the frozen classifier."""
        return self.modules.classifier(mel_input)

    def interpretation_waveform(self, mask, features, num_samples):
        """Listenable interpretation: ``expm1(M * L)`` with the input's phase, inverted.

        Arguments
        ---------
        mask : torch.Tensor
            ``[batch, frames', freq]``.
        features : SpectralFeatures
            Of the interpreted input (``frames >= frames'``).
        num_samples : int
            Length of the input; frames past ``frames'`` are silent.

        Returns
        -------
        torch.Tensor
            ``[batch, num_samples]``.
        """
        masked_in, _ = masked_log_magnitudes(mask, features.log_mag)
        magnitude = torch.expm1(masked_in)  # [batch, frames', freq]
        stft = crop_frames(features.stft, mask.shape[1])
        phase = torch.atan2(stft[..., 1], stft[..., 0])
        spectrum = torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)
        missing = features.stft.shape[1] - mask.shape[1]
        spectrum = torch.nn.functional.pad(spectrum, (0, 0, 0, 0, 0, missing))  # [batch, frames, freq, 2]
        return self.modules.compute_istft(spectrum, sig_length=num_samples)

    def on_stage_start(self, stage, epoch=None):
        """Starts this stage's per-example scores (VALID and TEST)."""
        self.stage_scores = {}
        self.interpretations_saved = 0

    def record_scores(self, scores):
        """Keeps per-example ``scores`` (dict of ``[batch]`` tensors) where they are, on the device, until the stage ends."""
        for name, values in scores.items():
            self.stage_scores.setdefault(name, []).append(values.detach().float())

    def stage_statistics(self, stage_loss):
        """The statistics of a VALID or TEST stage: loss and the mean of every recorded score, as plain floats.

        The means reach the host together, in one copy.
        """
        names = list(self.stage_scores)
        means = torch.stack([torch.cat(self.stage_scores[name]).mean() for name in names]).tolist() if names else []
        return {BEST_CHECKPOINT_KEY: float(stage_loss), **dict(zip(names, means))}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage, anneals the learning rate and keeps the best checkpoint."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {BEST_CHECKPOINT_KEY: float(stage_loss)}
            return
        stats = self.stage_statistics(stage_loss)
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(
                [self.optimizer], current_epoch=epoch, current_loss=1.0 - stats["fid_in"]
            )
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={BEST_CHECKPOINT_KEY: stats[BEST_CHECKPOINT_KEY]}, min_keys=[BEST_CHECKPOINT_KEY]
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta=self.test_log_meta(), test_stats=stats
            )
        self.last_stage_stats = stats

    def test_log_meta(self):
        """What the TEST line of the training log starts with: the epoch of the loaded checkpoint."""
        return {"Epoch loaded": self.hparams.epoch_counter.current}

    def should_save_interpretations(self, stage, epoch):
        """True in TEST, and in VALID every ``interpret_period`` epochs, until enough clips are saved."""
        if self.interpretations_saved >= self.hparams.interpretations_per_stage:
            return False
        if stage == sb.Stage.TEST:
            return True
        return stage == sb.Stage.VALID and epoch is not None and epoch % self.hparams.interpret_period == 0

    def save_interpretations(self, ids, wavs, mask, features, folder):
        """Writes ``original.wav``, ``interpretation.wav`` and ``spectrogram.png`` per clip under ``folder/<id>/``.

        Arguments
        ---------
        ids : list of str
        wavs : torch.Tensor
            The interpreted input, ``[batch, samples]``.
        mask : torch.Tensor
            ``[batch, frames', freq]``.
        features : SpectralFeatures
            Of ``wavs``.
        folder : str
        """
        count = min(len(ids), self.hparams.interpretations_per_stage - self.interpretations_saved)
        with torch.no_grad():
            interpretations = self.interpretation_waveform(mask[:count], _first(features, count), wavs.shape[1])
        for index in range(count):
            clip_folder = os.path.join(folder, str(ids[index]))
            os.makedirs(clip_folder, exist_ok=True)
            rate = self.hparams.sample_rate
            sf.write(os.path.join(clip_folder, "original.wav"), wavs[index].detach().cpu().float().numpy(), rate)
            sf.write(os.path.join(clip_folder, "interpretation.wav"), interpretations[index].cpu().float().numpy(), rate)
            save_spectrogram_figure(
                features.log_mag[index], mask[index], os.path.join(clip_folder, "spectrogram.png"), str(ids[index])
            )
        self.interpretations_saved += count


def _first(features, count):
    return SpectralFeatures(*(getattr(features, field.name)[:count] for field in dataclasses.fields(features)))


def save_spectrogram_figure(log_mag, mask, path, title):
    """Saves a PNG with the input ``log1p`` spectrogram, the mask and the masked spectrogram.

    Arguments
    ---------
    log_mag : torch.Tensor
        ``[frames, freq]``.
    mask : torch.Tensor
        ``[frames', freq]``.
    path : str
    title : str
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
        shown = axis.imshow(image.T.numpy(), origin="lower", aspect="auto", vmin=0, vmax=vmax)
        axis.set_title(name)
        axis.set_xlabel("frame")
        figure.colorbar(shown, ax=axis)
    axes[0].set_ylabel("frequency bin")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)

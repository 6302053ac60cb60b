"""InterpreterBrain: the base of interpreters of a frozen audio classifier.

It owns what an interpreter's training and evaluation share: the frozen
classifier's answer on the (noisy) input, the masked-in and masked-out
classifications of a mask (``masking``), the scores of
``interpretation_metrics`` (kept on the device until the stage ends), the
model-randomisation check, stage statistics and logging, learning-rate
annealing, and the listenable outputs of a stage (wav, ``clip.json`` and
``figures``' picture). Subclasses (``train_lmac.LMAC``, ``train_l2i.L2I``)
add their own forward pass, loss and mask method. Checkpoints
(``checkpointing``), the frozen classifier (``frozen_classifier``) and the
device set-up (``device_runtime``) live in their own modules.
"""

import collections
import dataclasses
import json
import logging
import math
import os

import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from lmac.data.wham import MixedBatch
from lmac.features import SpectralFeatures, spectral_features
from lmac.listening import MEDIAN_SCORES, OTHER_CLASS_SIR_GAIN, listening_scores, other_class_parts, source_parts
from lmac.mask_references import SilenceReference
from lmac.masking import crop_frames, inverted_interpretation, masked_log_magnitudes
from lmac.metrics import (
    as_mask,
    audible_localization,
    energy_kept,
    event_box_scores,
    event_boxes,
    frequency_profile,
    input_sensitivity,
    interpretation_scores,
    profile_cosine,
    spearman_similarity,
    trust_scores,
)
from lmac.models.frozen_classifier import randomised_classifier
from lmac.reporting.curves import save_training_curves
from lmac.reporting.figures import save_spectrogram_figure
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY
from lmac.training.device import CudaFedBrain, to_device

logger = logging.getLogger(__name__)

# TEST's per-class statistics of a training run, beside its train_log.txt.
PER_CLASS_TEST_FILE = "test_per_class.json"
# A validation stage with at least this share of near-silent interpretations is reported as collapsed.
COLLAPSE_SILENT_SHARE = 0.5
# A class whose interpretations are at least COLLAPSE_SILENT_SHARE near-silent while its Fid-In is under this
# has collapsed: its masks went silent and lost the decision.
COLLAPSE_CLASS_FID_IN = 0.75
# A class whose interpretations are mostly near-silent, whose decision the reference alone keeps on at least this
# share of its clips, keeps its Fid-In through the reference only: a listener hears nothing of it.
SILENT_BY_REFERENCE_SHARE = 0.5
# The listening scores a saved clip's clip.json holds (``listening_scores``).
SAVED_LISTENING_SCORES = ("sir_gain_db", "target_kept")
# The feature modules (``features.Device*``) every interpreter brain holds next to its models.
FEATURE_MODULES = ("compute_stft", "compute_istft", "classifier_input")


@dataclasses.dataclass
class MaskedOutput:
    """What an interpreter's ``compute_forward`` computes once per batch, with a mask.

    ``mixed`` holds the interpreted input ``wavs`` ``[batch, samples]``, the
    clean clips ``clean_wavs`` (the same tensor without noise) and what was
    mixed in. Shapes: ``logits*`` ``[batch, n_classes]``, ``mask`` and ``reference`` (``R``,
    what fills the cells a mask removes) ``[batch, frames', freq]``. ``logits_empty``
    is the classifier on the masked-in input of an empty mask (``R``), or
    None where nothing reads it (training with an objective that does not).
    ``feature_maps`` are the classifier's on the input, which a mask method reads.
    """

    mixed: MixedBatch
    features: SpectralFeatures
    logits: torch.Tensor
    mask: torch.Tensor
    reference: torch.Tensor
    logits_masked_in: torch.Tensor
    logits_masked_out: torch.Tensor
    logits_empty: torch.Tensor | None = None
    feature_maps: tuple = ()

    @property
    def wavs(self):
        """The interpreted input, ``[batch, samples]``."""
        return self.mixed.wavs

    @property
    def clean_wavs(self):
        """The clips before any noise, ``[batch, samples]``: ``wavs`` itself when none was mixed in."""
        return self.mixed.clean


class InterpreterBrain(CudaFedBrain):
    """Base class of interpreters of a frozen classifier.

    Expects these modules: ``classifier`` (a ``FrozenClassifier``),
    ``compute_stft``, ``compute_istft`` and ``classifier_input`` (the
    ``features`` module's, so that their constants live on the device) and
    the interpreter's own; these hparams: ``epoch_counter``,
    ``lr_annealing``, ``train_logger``, ``interpret_period``,
    ``interpretations_per_stage``, ``interpretations_folder``, ``n_fft`` and
    ``sample_rate``. Subclasses implement ``compute_forward``,
    ``compute_objectives`` and ``own_mask_method``, and call
    ``record_stage_outputs`` in VALID and TEST.

    On a GPU a step reads nothing back from the device but its loss (once,
    at its end, where SpeechBrain's ``fit_batch`` returns it): the scores stay
    on the device until the stage ends, batches come from pinned memory, the
    optimiser is fused and cuDNN picks its fastest algorithms for the fixed
    clip shape.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.Brain``.
    mask_method : lmac.methods.MaskMethod or None
        Computes the masks that are scored and saved; None: the interpreter's own (``own_mask_method``).
    noise_stream : object with ``mix(clean, labels)`` (a ``MixedBatch``) or None
        Mixed into every batch when given: WHAM! noise (``add_wham_noise``)
        or an evaluation contamination.
    events : pandas.DataFrame or None
        ``meta/events.csv`` indexed by clip id (``load_event_table``): adds
        the ``localization`` score in VALID and TEST.
    mask_reference : mask_references.MaskReference or None
        What fills the cells a mask removes, in the objective and the
        metrics (``mask_reference``); None: silence.
    class_names : list of str or None
        Name of each class index, for the warnings; None: the indices.
    """

    def __init__(
        self, *args, mask_method=None, noise_stream=None, events=None, mask_reference=None, class_names=None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.class_names = class_names
        self.mask_method = mask_method
        self.noise_stream = noise_stream
        self.events = events
        self.mask_reference = mask_reference if mask_reference is not None else SilenceReference()
        self.randomised = None  # the model-randomisation cascade's (layer, mask method) steps, built in TEST
        if self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True  # every training clip has the same shape

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
        """STFT, ``log1p`` magnitude and classifier input of ``wavs`` ``[batch, samples]``."""
        return spectral_features(wavs, self.modules.compute_stft, self.modules.classifier_input)

    def input_from_log_mag(self, log_mag, clip_log_mag=None):
        """The classifier family's input (CNN14: ``log1p(Mel(expm1(L)))``) of a (masked) ``log1p`` magnitude
        ``[batch, frames, freq]``; a mean-normalised input removes the mean of ``clip_log_mag``, the unmasked clip
        (``features.sentence_mean_norm``)."""
        return self.modules.classifier_input(log_mag, clip_log_mag)

    def classify(self, classifier_input):
        """Logits ``[batch, n_classes]`` and feature maps of the frozen classifier."""
        return self.modules.classifier(classifier_input)

    def classify_batch(self, batch):
        """The interpreted input, its features and the frozen classifier's answer on it.

        Returns
        -------
        mixed : MixedBatch
            The interpreted input ``mixed.wavs`` ``[batch, samples]``, the clean clips and what was mixed in.
        features : SpectralFeatures
        logits : torch.Tensor
            ``[batch, n_classes]``.
        feature_maps : tuple of torch.Tensor
        """
        batch = batch.to(self.device, non_blocking=True)  # from pinned memory on CUDA: no wait
        clean, _ = batch.sig  # [batch, samples]
        mixed = self.add_noise(clean, batch.class_string_encoded.data.squeeze(1))
        features = self.compute_features(mixed.wavs)
        with torch.no_grad():
            logits, feature_maps = self.classify(features.classifier_input)
        return mixed, features, logits, feature_maps

    def add_noise(self, clean, labels):
        """The clean batch (of classes ``labels`` ``[batch]``) mixed by the noise stream, or as it is when there
        is none: a ``MixedBatch``."""
        if self.noise_stream is None:
            return MixedBatch.of_clean(clean)
        return self.noise_stream.mix(clean, labels)

    def own_mask_method(self):
        """The ``lmac.methods.MaskMethod`` of this interpreter's own modules."""
        raise NotImplementedError(f"{type(self).__name__} does not define its own mask method.")

    def current_mask_method(self):
        """``mask_method``, or the interpreter's own method."""
        return self.mask_method if self.mask_method is not None else self.own_mask_method()

    def compute_mask(self, features, logits, feature_maps):
        """The mask ``[batch, frames, freq]`` of ``mask_method``, or of the interpreter's own method."""
        return self.current_mask_method().mask(features, logits, feature_maps)

    def needs_empty_logits(self, stage):
        """True where the classifier's answer on an empty mask is read: VALID and TEST (the trust measures)."""
        return stage != sb.Stage.TRAIN

    @torch.no_grad()
    def classify_empty(self, reference, clip_log_mag):
        """Logits ``[batch, n_classes]`` of the empty mask's input, the reference ``R`` ``[batch, frames, freq]``, in
        the normalisation of the clips ``clip_log_mag`` ``[batch, frames, freq]``.

        A reference that is the same for every clip, read by an input that
        does not depend on the clip, is classified once and its answer repeated.
        """
        if self.mask_reference.same_for_every_clip and not self.modules.classifier_input.uses_clip_statistics:
            logits, _ = self.classify(self.input_from_log_mag(reference[:1]))
            return logits.expand(reference.shape[0], -1)
        logits, _ = self.classify(self.input_from_log_mag(reference, clip_log_mag))
        return logits

    def masked_output(self, mixed, features, logits, mask, stage, feature_maps=()):
        """Classifies the masked-in and masked-out inputs (and, when read, the empty mask's); returns a ``MaskedOutput``
        that also keeps the input's ``feature_maps``.

        The removed cells hold ``mask_reference``'s ``R`` (``masked_log_magnitudes``).
        """
        reference = self.mask_reference.fill(crop_frames(features.log_mag, mask.shape[1]))
        masked_in, masked_out = masked_log_magnitudes(mask, features.log_mag, reference)
        logits_masked_in, _ = self.classify(self.input_from_log_mag(masked_in, features.log_mag))
        logits_masked_out, _ = self.classify(self.input_from_log_mag(masked_out, features.log_mag))
        logits_empty = self.classify_empty(reference, features.log_mag) if self.needs_empty_logits(stage) else None
        return MaskedOutput(
            mixed, features, logits, mask, reference, logits_masked_in, logits_masked_out, logits_empty, feature_maps
        )

    def record_stage_outputs(self, output, batch, stage, extra_scores):
        """Records the scores of a ``MaskedOutput`` and saves interpretations when it is time.

        The scores: the interpretation metrics and trust measures, ``acc``,
        with ``events`` ``localization``, ``event_energy_kept`` (the energy
        a mask exactly on the event box keeps: what ``energy_kept`` is worth
        on this data) and ``event_silent_share`` (1 where that mask would
        itself count as near-silent), and ``extra_scores``, more per-example ``[batch]``
        scores (``in_masks`` of fine-tuning).
        """
        scores = interpretation_scores(output.logits, output.logits_masked_in, output.logits_masked_out, output.mask)
        scores.update(
            trust_scores(output.logits, output.logits_empty, scores["fid_in"], output.mask, output.features.log_mag)
        )
        labels = batch.class_string_encoded.data.squeeze(1)
        if self.hparams.data_classes == self.hparams.n_classes:  # else the head's classes are not the data's
            scores["acc"] = (output.logits.argmax(dim=1) == labels).float()
        scores.update(extra_scores)
        self.stage_profiles["mask"].append(frequency_profile(output.mask))
        self.stage_profiles["sensitivity"].append(frequency_profile(as_mask(self.classifier_sensitivity(output))))
        self.stage_profiles["classes"].append(labels)
        if self.events is not None:
            boxes = self.event_boxes(batch.id, output.mask.shape[1:], output.mask.device)
            scores["localization"] = audible_localization(output.mask.detach().float(), boxes, scores["silent_share"])
            scores.update(event_box_scores(boxes, output.features.log_mag))
            scores["event_fid_in"] = self.event_mask_keeps_decision(output, boxes)
            self.stage_profiles["event"].append(frequency_profile(boxes.float()))
        parts = self.source_parts(output, batch, labels) if stage == sb.Stage.TEST else None
        if parts is not None:
            scores.update(
                listening_scores(
                    output.mask,
                    output.features.log_mag,
                    parts,
                    self.modules.compute_stft,
                    self.modules.compute_istft,
                )
            )
            scores.update(self.other_class_scores(output, batch, labels))
        self.record_scores(scores, labels)
        if stage == sb.Stage.TEST:
            self.record_randomisation_similarity(output, labels)
        epoch = self.hparams.epoch_counter.current
        if if_main_process() and self.should_save_interpretations(stage, epoch):
            folder_name = "test" if stage == sb.Stage.TEST else f"valid_epoch{epoch}"
            folder = os.path.join(self.hparams.interpretations_folder, folder_name)
            listening = {name: scores[name] for name in SAVED_LISTENING_SCORES if name in scores}
            self.save_interpretations(batch.id, output, labels, folder, parts, listening)

    def source_parts(self, output, batch, labels):
        """``listening.source_parts`` of the batch: its input split into the decided class's sound and the rest,
        from what was mixed in and, where the data keeps them, the clips' event stems (``event_sig``); or None."""
        return source_parts(output.mixed, event_stems(batch), labels, output.logits.argmax(dim=1))

    def other_class_scores(self, output, batch, labels):
        """In a mixture of two classes, for a class-conditional method, ``OTHER_CLASS_SIR_GAIN``: the gain of its mask
        of the class *not* decided, with that class's sound as the target (``listening.other_class_parts``); ``{}``
        for other inputs and methods."""
        method = self.current_mask_method()
        parts, classes = other_class_parts(output.mixed, event_stems(batch), labels, output.logits.argmax(dim=1))
        if parts is None or not method.class_conditional:
            return {}
        mask = method.mask_for_classes(output.features, output.logits, output.feature_maps, classes).detach()
        scores = listening_scores(
            mask, output.features.log_mag, parts, self.modules.compute_stft, self.modules.compute_istft
        )
        return {OTHER_CLASS_SIR_GAIN: scores["sir_gain_db"]}

    def classifier_sensitivity(self, output):
        """``metrics.input_sensitivity`` of the classifier at the clips of ``output``, for its decisions:
        ``[batch, frames', freq]``. Where its classes' profiles (``sensitivity_profile_cosine``) are alike, the
        classifier's decision moves with the same bands for every class, and masks learnt from it tend to keep
        those bands whatever the class."""
        log_mag = crop_frames(output.features.log_mag, output.mask.shape[1])

        def logits_of(cells):
            return self.classify(self.input_from_log_mag(cells, output.features.log_mag))[0]

        return input_sensitivity(log_mag, logits_of, output.logits.argmax(dim=1))

    @torch.no_grad()
    def event_mask_keeps_decision(self, output, boxes):
        """``event_fid_in`` per clip: 1 where a mask exactly on the clip's event box (``[batch, frames', freq]``,
        boolean), its other cells filled with ``output.reference``, keeps the classifier's decision; ``[batch]``.

        What a perfect localiser's Fid-In is worth: where it is low, the
        classifier does not decide from the event alone, and a faithful mask
        has to keep more than the event.
        """
        masked_in, _ = masked_log_magnitudes(boxes.to(output.mask.dtype), output.features.log_mag, output.reference)
        logits, _ = self.classify(self.input_from_log_mag(masked_in, output.features.log_mag))
        return (logits.argmax(dim=1) == output.logits.argmax(dim=1)).float()

    def event_boxes(self, ids, shape, device):
        """Boolean ``[batch, *shape]`` event boxes of the clips ``ids`` in ``self.events``, on ``device``."""
        boxes = event_boxes(
            [self.events.loc[clip_id] for clip_id in ids],
            shape,
            self.modules.compute_stft.hop_length,
            self.hparams.sample_rate,
            self.hparams.n_fft,
        )
        return to_device(boxes, device)

    def record_randomisation_similarity(self, output, labels):
        """Records the model-randomisation cascade for the stage's first ``randomisation_clips`` clips.

        Step ``k`` runs the same mask method on the classifier whose first
        ``k`` of ``randomisation_layers`` (from the top down to the deepest
        block the decoder reads) are re-drawn (L-MAC: the same decoder reading
        that classifier's feature maps), for the same decision, and records
        Spearman's rho between its masks and ``output.mask`` as
        ``randomisation_step_<k>``; the last step is ``randomisation_similarity``.
        Beside them, ``randomisation_floor``: the rho between the masks of two
        unrelated clips (each clip's with the next one's), the method's own prior.
        """
        count = min(output.mask.shape[0], self.hparams.randomisation_clips - self.randomisation_recorded)
        if count <= 0:
            return
        if self.randomised is None:
            self.randomised = randomisation_cascade(
                self.modules.classifier,
                self.current_mask_method(),
                self.hparams.randomisation_layers,
                self.hparams.seed,
            )
        features = _rows(output.features, slice(count))
        trained = output.mask[:count]
        scores = {}
        for step, (_, classifier, method) in enumerate(self.randomised, start=1):
            with torch.no_grad():
                _, feature_maps = classifier(features.classifier_input)
            mask = method.mask(features, output.logits[:count], feature_maps)
            scores[f"randomisation_step_{step}"] = spearman_similarity(trained, mask)
        scores["randomisation_similarity"] = scores[f"randomisation_step_{len(self.randomised)}"]
        if count > 1:
            scores["randomisation_floor"] = spearman_similarity(trained, trained.roll(1, dims=0))
        self.record_scores(scores, labels[:count])
        self.randomisation_recorded += count

    def log_randomisation_cascade(self, stats):
        """Logs the cascade of a TEST stage in words: each step's re-drawn layer and similarity, then the floor."""
        if self.randomised is None or "randomisation_step_1" not in stats:
            return
        steps = ", ".join(
            f"{layer} {stats[f'randomisation_step_{step}']:.2f}"
            for step, (layer, _, _) in enumerate(self.randomised, start=1)
            if f"randomisation_step_{step}" in stats
        )
        floor = (
            f"; two unrelated clips' masks {stats['randomisation_floor']:.2f}" if "randomisation_floor" in stats else ""
        )
        logger.info(
            "Model randomisation, from the top down (rank correlation of the masks with the trained classifier's, "
            "after re-drawing each layer in turn and those above it): %s%s. Similarities near the floor show masks "
            "that depend on the classifier.",
            steps,
            floor,
        )

    def interpretation_waveform(self, mask, features, num_samples):
        """``inverted_interpretation`` with this Brain's ISTFT: ``[batch, num_samples]``."""
        return inverted_interpretation(mask, features, num_samples, self.modules.compute_istft)

    def on_stage_start(self, stage, epoch=None):
        """Starts this stage's per-example scores (VALID and TEST)."""
        self.stage_scores = {}
        self.stage_classes = {}
        self.stage_profiles = {"mask": [], "event": [], "sensitivity": [], "classes": []}
        self.stage_values = {}
        self.saved_per_class = collections.Counter()  # the stage's saved interpretations, per true class
        self.randomisation_recorded = 0

    def record_scores(self, scores, classes):
        """Keeps per-example ``scores`` (dict of ``[batch]`` tensors) and the clips' true ``classes`` ``[batch]``
        where they are, on the device, until the stage ends."""
        for name, values in scores.items():
            self.stage_scores.setdefault(name, []).append(values.detach().float())
            self.stage_classes.setdefault(name, []).append(classes[: values.shape[0]])

    def record_stage_value(self, name, value):
        """Keeps a value of the whole stage (a 0-d tensor, not per clip or per class), logged as ``name``."""
        self.stage_values[name] = value.detach().float().reshape(())

    def stage_statistics(self, stage_loss):
        """The statistics of a VALID or TEST stage: loss, the mean of every recorded score, the profile
        cosines (``profile_cosine``, ``event_profile_cosine`` of the event boxes and
        ``sensitivity_profile_cosine`` of the classifier's own sensitivity) and the stage values
        (``record_stage_value``), as plain floats.

        The means, the cosines and the per-class means reach the host together,
        in one copy. ``self.per_class_stats`` gets the mean of every score per
        true class (``{class index: {name: mean}}``).
        """
        stats = {BEST_CHECKPOINT_KEY: float(stage_loss)}
        self.per_class_stats = {}
        names = list(self.stage_scores)
        if not names:
            return stats
        n_classes = self.hparams.data_classes
        scores = {name: torch.cat(self.stage_scores[name]) for name in names}
        classes = {name: torch.cat(self.stage_classes[name]) for name in names}
        cosines = {
            key: profile_cosine(
                torch.cat(self.stage_profiles[kind]),
                torch.cat(self.stage_profiles["classes"]),
                n_classes,
                empty_is_alike=kind != "sensitivity",  # a sensitivity zero everywhere says nothing of its bands
            )
            for key, kind in (
                ("profile_cosine", "mask"),
                ("event_profile_cosine", "event"),
                ("sensitivity_profile_cosine", "sensitivity"),
            )
            if self.stage_profiles[kind]
        }
        whole_stage = {**cosines, **self.stage_values}
        class_means, class_counts = per_class_means(scores, classes, n_classes, MEDIAN_SCORES)  # [names, n_classes]
        overall = torch.stack([*(stage_value(name, scores[name]) for name in names), *whole_stage.values()])
        values = torch.cat([overall, class_means.flatten(), class_counts.flatten()]).tolist()  # one host copy
        # A score no clip has a value of (every interpretation near-silent) is left out.
        stats.update((name, value) for name, value in zip(names, values[: len(names)]) if math.isfinite(value))
        # Fewer than two classes have no profile cosine.
        stats.update(
            (key, value) for key, value in zip(whole_stage, values[len(names) : len(overall)]) if math.isfinite(value)
        )
        per_class = values[len(overall) :]
        self.per_class_stats = per_class_table(
            names, per_class[: len(per_class) // 2], per_class[len(per_class) // 2 :], n_classes
        )
        stats.update(class_collapse_stats(self.per_class_stats))
        return stats

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
            warn_if_collapsed(stats, epoch)
            warn_of_collapsed_classes(self.per_class_stats, epoch, self.class_names)
            if if_main_process():
                save_training_curves(self.hparams.train_log, f"{type(self).__name__} training")
        else:
            self.hparams.train_logger.log_stats(stats_meta=self.test_log_meta(), test_stats=stats)
            self.log_randomisation_cascade(stats)
        self.last_stage_stats = stats

    def test_log_meta(self):
        """What the TEST line of the training log starts with: the loaded epoch, or the name of ``mask_method``."""
        if self.mask_method is not None:
            return {"method": self.mask_method.name}
        return {"Epoch loaded": self.hparams.epoch_counter.current}

    def should_save_interpretations(self, stage, epoch):
        """True in TEST, and in VALID every ``interpret_period`` epochs, until enough clips are saved."""
        if self.saved_per_class.total() >= self.hparams.interpretations_per_stage:
            return False
        if stage == sb.Stage.TEST:
            return True
        return stage == sb.Stage.VALID and epoch is not None and epoch % self.hparams.interpret_period == 0

    def save_interpretations(self, ids, output, labels, folder, parts=None, listening=None):
        """Writes ``original.wav``, ``interpretation.wav``, ``spectrogram.png`` and ``clip.json`` under
        ``folder/<id>/`` for each clip of the batch that ``clips_to_save`` chooses; with ``parts``, also
        ``target.wav``, the sound the interpretation should play, as it is in the input.

        ``clip.json`` holds the class indices of the true ``label`` and of the
        classifier's ``prediction``, the ``probability`` of the prediction,
        the interpretation's ``energy_kept``, the class (``empty_decision``)
        and its probability (``empty_probability``) that the classifier gives
        the masked-in input of an empty mask, and the ``listening`` scores
        (null where a clip has none).

        Arguments
        ---------
        ids : list of str
        output : MaskedOutput
            Of the batch: the interpreted input ``wavs`` ``[batch, samples]``,
            its ``features``, ``logits``, ``logits_empty`` and ``mask``.
        labels : torch.Tensor
            ``[batch]`` true class indices.
        folder : str
        parts : listening.SourceParts or None
        listening : dict of str to torch.Tensor or None
            ``[batch]`` listening scores (``listening_scores``).
        """
        chosen = self.clips_to_save(labels)
        if not chosen:
            return
        index = torch.tensor(chosen, device=output.mask.device)
        wavs, mask, features = output.wavs[index], output.mask[index], _rows(output.features, index)
        with torch.no_grad():
            interpretations = self.interpretation_waveform(mask, features, wavs.shape[1])
        probabilities, predictions = torch.softmax(output.logits[index].float(), dim=1).max(dim=1)
        empty_probabilities, empty_decisions = torch.softmax(output.logits_empty[index].float(), dim=1).max(dim=1)
        columns = {
            "label": labels[index],
            "prediction": predictions,
            "probability": probabilities,
            "energy_kept": energy_kept(mask.detach(), features.log_mag),
            "empty_decision": empty_decisions,
            "empty_probability": empty_probabilities,
            **{name: scores[index] for name, scores in (listening or {}).items()},
        }
        values = {
            name: [None if value != value else value for value in column.tolist()] for name, column in columns.items()
        }
        rate = self.hparams.sample_rate
        for row, clip_id in enumerate(ids[position] for position in chosen):
            clip_folder = os.path.join(folder, str(clip_id))
            os.makedirs(clip_folder, exist_ok=True)
            sf.write(os.path.join(clip_folder, "original.wav"), wavs[row].detach().cpu().float().numpy(), rate)
            sf.write(os.path.join(clip_folder, "interpretation.wav"), interpretations[row].cpu().float().numpy(), rate)
            if parts is not None:
                sf.write(os.path.join(clip_folder, "target.wav"), parts.target[index[row]].cpu().float().numpy(), rate)
            save_spectrogram_figure(
                features.log_mag[row],
                mask[row],
                os.path.join(clip_folder, "spectrogram.png"),
                str(clip_id),
                self.modules.compute_stft.hop_length,
                rate,
            )
            with open(os.path.join(clip_folder, "clip.json"), "w", encoding="utf-8") as file:
                json.dump({name: values[name][row] for name in columns}, file)

    def clips_to_save(self, labels):
        """Batch positions of the clips to save, so that a stage's saved clips cover the classes evenly.

        A class gets at most ``ceil(interpretations_per_stage / data_classes)``
        clips, the first ones met, until ``interpretations_per_stage`` are saved.

        Arguments
        ---------
        labels : torch.Tensor
            ``[batch]`` true class indices (read on the host).
        """
        per_class = math.ceil(self.hparams.interpretations_per_stage / self.hparams.data_classes)
        chosen = []
        for position, label in enumerate(labels.tolist()):
            if self.saved_per_class.total() >= self.hparams.interpretations_per_stage:
                break
            if self.saved_per_class[label] < per_class:
                self.saved_per_class[label] += 1
                chosen.append(position)
        return chosen


def warn_if_collapsed(stats, epoch):
    """Warns when a validation stage's ``silent_share`` reaches ``COLLAPSE_SILENT_SHARE``; returns True then.

    The masks have collapsed towards the empty mask: the interpretations are
    near-silent, whatever Fid-In says.
    """
    if stats.get("silent_share", 0.0) < COLLAPSE_SILENT_SHARE:
        return False
    logger.warning(
        "Epoch %s: the masks have collapsed: %.0f%% of the validation interpretations keep under 1%% of the "
        "input's energy (energy_kept %.3f, Fid-In %.2f, fid_in_beyond_empty %.2f). They are near-silent; see "
        "docs/method.md (Trust measures) for what to change.",
        epoch,
        100 * stats["silent_share"],
        stats["energy_kept"],
        stats["fid_in"],
        stats["fid_in_beyond_empty"],
    )
    return True


def collapsed_classes(per_class_stats):
    """The classes (indices) whose interpretations are mostly near-silent (``silent_share >= COLLAPSE_SILENT_SHARE``)
    while their Fid-In is under ``COLLAPSE_CLASS_FID_IN``.

    Example
    -------
    >>> collapsed_classes({0: {"fid_in": 1.0, "silent_share": 0.0}, 1: {"fid_in": 0.125, "silent_share": 0.875}})
    [1]
    """
    return [
        label
        for label, stats in per_class_stats.items()
        if stats.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE and stats.get("fid_in", 1.0) < COLLAPSE_CLASS_FID_IN
    ]


def silent_by_reference_classes(per_class_stats):
    """The classes (indices) whose interpretations are mostly near-silent while their Fid-In stays high because the
    reference alone keeps their decision (``empty_keeps_decision >= SILENT_BY_REFERENCE_SHARE``).

    Example
    -------
    >>> silent_by_reference_classes({0: {"fid_in": 1.0, "silent_share": 0.875, "empty_keeps_decision": 1.0},
    ...                              1: {"fid_in": 1.0, "silent_share": 0.875, "empty_keeps_decision": 0.0}})
    [0]
    """
    return [
        label
        for label, stats in per_class_stats.items()
        if stats.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE
        and stats.get("fid_in", 0.0) >= COLLAPSE_CLASS_FID_IN
        and stats.get("empty_keeps_decision", 0.0) >= SILENT_BY_REFERENCE_SHARE
    ]


def class_collapse_stats(per_class_stats):
    """``worst_class_fid_in`` (the lowest per-class Fid-In) and ``collapsed_classes`` (how many ``collapsed_classes``)
    of a stage's per-class table; nothing for a stage without Fid-In.

    Example
    -------
    >>> class_collapse_stats({0: {"fid_in": 1.0, "silent_share": 0.0}, 1: {"fid_in": 0.125, "silent_share": 0.875}})
    {'worst_class_fid_in': 0.125, 'collapsed_classes': 1}
    """
    fid_in = [stats["fid_in"] for stats in per_class_stats.values() if "fid_in" in stats]
    if not fid_in:
        return {}
    return {"worst_class_fid_in": min(fid_in), "collapsed_classes": len(collapsed_classes(per_class_stats))}


def warn_of_collapsed_classes(per_class_stats, epoch, class_names=None):
    """Warns, naming them, of the classes whose validation interpretations have collapsed (``collapsed_classes``)
    and of those that are silent but keep their decision through the reference alone
    (``silent_by_reference_classes``); returns the indices of both, in that order."""
    collapsed = collapsed_classes(per_class_stats)
    if collapsed:
        logger.warning(
            "Epoch %s: the interpretations of %d class(es) have collapsed to silence and lost the decision: %s. "
            "Listen to them; see docs/method.md (Trust measures).",
            epoch,
            len(collapsed),
            described_classes(collapsed, per_class_stats, class_names),
        )
    silent = silent_by_reference_classes(per_class_stats)
    if silent:
        logger.warning(
            "Epoch %s: the interpretations of %d class(es) are near-silent and keep the decision only because the "
            "reference alone does: %s. A listener hears nothing of them; see docs/method.md (Trust measures).",
            epoch,
            len(silent),
            described_classes(silent, per_class_stats, class_names),
        )
    return collapsed + silent


def described_classes(labels, per_class_stats, class_names):
    """The classes ``labels``, each named (``class_names``, else its index) with its numbers in words."""
    return ", ".join(
        f"{class_names[label] if class_names else label} ({collapse_description(per_class_stats[label])})"
        for label in labels
    )


def collapse_description(stats):
    """A collapsed class's numbers in words: Fid-In, near-silent share, what the reference alone keeps
    (``empty_keeps_decision``) and, with events, what a mask exactly on the event keeps (``event_fid_in``).

    Example
    -------
    >>> collapse_description({"fid_in": 0.125, "silent_share": 0.875, "empty_keeps_decision": 0.125, "event_fid_in": 0.0})
    'Fid-In 0.12, 88% near-silent; the reference alone keeps 12% of its decisions; a mask exactly on its event keeps 0% of them'
    """
    words = f"Fid-In {stats['fid_in']:.2f}, {100 * stats['silent_share']:.0f}% near-silent"
    if "empty_keeps_decision" in stats:
        words += f"; the reference alone keeps {100 * stats['empty_keeps_decision']:.0f}% of its decisions"
    if "event_fid_in" in stats:
        words += f"; a mask exactly on its event keeps {100 * stats['event_fid_in']:.0f}% of them"
    return words


def stage_value(name, values):
    """A score's value over the stage's clips ``[clips]`` (NaN: the clip has none): the median of the clips with a
    value for ``MEDIAN_SCORES``, else their mean; NaN when no clip has one. A 0-d tensor.

    Example
    -------
    >>> values = torch.tensor([1.0, float("nan"), 2.0, 9.0])
    >>> stage_value("sir_gain_db", values).item(), stage_value("fid_in", values).item()
    (2.0, 4.0)
    """
    if name in MEDIAN_SCORES:
        return values.nanmedian()
    return values.nanmean()


def per_class_means(scores, classes, n_classes, medians=frozenset()):
    """The mean (the median for the names in ``medians``) of every score per class over the clips with a value
    (not NaN), and how many those are; no host read.

    Arguments
    ---------
    scores, classes : dict of str to torch.Tensor
        Per score name, the ``[clips]`` values and the clips' ``[clips]`` class indices (below ``n_classes``).
    n_classes : int
    medians : set of str

    Returns
    -------
    means, counts : torch.Tensor
        ``[len(scores), n_classes]`` each, rows in the order of ``scores``; a mean is 0 where its count is.

    Example
    -------
    >>> values = {"AD": torch.tensor([1.0, 3.0, float("nan"), 8.0]), "sir_gain_db": torch.tensor([1.0, 2.0, 3.0, 10.0])}
    >>> means, counts = per_class_means(values, dict.fromkeys(values, torch.tensor([0, 0, 1, 1])), 2, {"sir_gain_db"})
    >>> means.tolist(), counts.tolist()
    ([[2.0, 8.0], [1.0, 3.0]], [[2.0, 1.0], [2.0, 2.0]])
    """
    means, counts = [], []
    for name, values in scores.items():
        present = ~values.isnan()
        count = torch.zeros(n_classes, dtype=values.dtype, device=values.device)
        count.index_add_(0, classes[name], present.to(values.dtype))
        if name in medians:
            mean = torch.stack([values[classes[name] == label].nanmedian() for label in range(n_classes)])
            mean = torch.where(count > 0, mean, 0.0)
        else:
            total = torch.zeros(n_classes, dtype=values.dtype, device=values.device)
            mean = total.index_add_(0, classes[name], torch.where(present, values, 0.0)) / count.clamp_min(1)
        means.append(mean)
        counts.append(count)
    return torch.stack(means), torch.stack(counts)


def per_class_table(names, means, counts, n_classes):
    """``{class index: {name: mean}}`` from ``per_class_means``' flattened host values, classes with clips only.

    Example
    -------
    >>> per_class_table(["AD", "fid_in"], [5.0, 2.0, 0.0, 1.0], [1, 2, 0, 3], 2)  # fid_in has no clip of class 0
    {0: {'AD': 5.0}, 1: {'AD': 2.0, 'fid_in': 1.0}}
    """
    table = {}
    for row, name in enumerate(names):
        for label in range(n_classes):
            if counts[row * n_classes + label] > 0:
                table.setdefault(label, {})[name] = means[row * n_classes + label]
    return dict(sorted(table.items()))


def write_per_class(per_class_stats, class_names, path):
    """Writes ``per_class_means``' table as JSON at ``path``, keyed by class name; returns the named table."""
    named = {class_names[index]: stats for index, stats in per_class_stats.items()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(named, file, indent=2)
    return named


def randomisation_cascade(classifier, method, layers, seed):
    """The model-randomisation cascade's steps: for each of ``layers`` in turn, top first, ``(layer, classifier, method)``
    with that layer and every one before it re-drawn (``randomised_classifier``) and the mask method on that classifier.

    Example
    -------
    >>> from lmac.methods import AllOnesMask
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> steps = randomisation_cascade(model, AllOnesMask(), ["1", "0"], seed=0)
    >>> [(layer, torch.equal(copy[0].weight, model[0].weight)) for layer, copy, _ in steps]
    [('1', True), ('0', False)]
    """
    steps = []
    for count, layer in enumerate(layers, start=1):
        randomised = randomised_classifier(classifier, layers[:count], seed)
        steps.append((layer, randomised, method.on_classifier(randomised)))
    return steps


def event_stems(batch):
    """The clips' event stems ``[batch, samples]`` where the data keeps them (the batch's ``event_sig``), else None."""
    event_sig = getattr(batch, "event_sig", None)  # a key of the batch only where the data keeps stems
    return None if event_sig is None else event_sig.data


def _rows(features, index):
    return SpectralFeatures(*(getattr(features, field.name)[index] for field in dataclasses.fields(features)))

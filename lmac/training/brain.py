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
import functools
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
from lmac.listening import clean_clip_parts, other_class_parts, source_parts, without_mostly_unheard
from lmac.mask_references import SilenceReference
from lmac.masking import crop_frames, inverted_interpretation, masked_log_magnitudes
from lmac.metrics import (
    as_mask,
    centred_ranks,
    energy_kept,
    event_boxes,
    frequency_profile,
    input_sensitivity,
    profile_cosine,
    spearman_similarity,
)
from lmac.models.frozen_classifier import randomised_classifier
from lmac.reporting.curves import save_training_curves
from lmac.reporting.figures import save_spectrogram_figure
from lmac.scoring import (
    ClassifierScores,
    ClipScoring,
    class_collapse_stats,
    clip_scores,
    per_class_means,
    per_class_table,
    stage_value,
    warn_if_collapsed,
    warn_of_collapsed_classes,
)
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY
from lmac.training.device import CudaFedBrain, set_weight_layout, to_device

logger = logging.getLogger(__name__)

# The settings that define what any interpreter's run learns: a run is resumed only with the same values of
# these and of its own Brain's (lmac.checks.check_resumes_the_same_run).
INTERPRETER_RUN_SETTINGS = (
    "seed",
    "classifier_family",
    "width",
    "embedding_model_path",
    "classifier_model_path",
    "add_wham_noise",
    "batch_size",
    "lr",
    "weight_decay",
    "mask_reference",
)

# TEST's per-class statistics of a training run, beside its train_log.txt.
PER_CLASS_TEST_FILE = "test_per_class.json"
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
    classifier_scores : scoring.ClassifierScores or None
        Where the scores that depend only on the classifier and the clip are kept (shared by the methods of a
        comparison); None: a new one, shared by this interpreter's stages. Read where ``same_input_every_time``.
    """

    def __init__(
        self,
        *args,
        mask_method=None,
        noise_stream=None,
        events=None,
        mask_reference=None,
        class_names=None,
        classifier_scores=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.classifier_scores = classifier_scores if classifier_scores is not None else ClassifierScores()
        self.class_names = class_names
        self.mask_method = mask_method
        self.noise_stream = noise_stream
        self.current_stage = None  # set at each stage's start: VALID mixes each clip with its own noise
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
        mixed = self.add_noise(clean, batch.class_string_encoded.data.squeeze(1), batch.id)
        features = self.compute_features(mixed.wavs)
        with torch.no_grad():
            logits, feature_maps = self.classify(features.classifier_input)
        return mixed, features, logits, feature_maps

    def add_noise(self, clean, labels, ids):
        """The clean batch (of classes ``labels`` ``[batch]``, clip ``ids``) mixed by the noise stream, or as it is
        when there is none: a ``MixedBatch``. In VALID each clip gets its own noise (``mix_own``), the same at every
        epoch, so that the epochs are compared on one validation set."""
        if self.noise_stream is None:
            return MixedBatch.of_clean(clean)
        if self.same_input_every_time(self.current_stage):
            return self.noise_stream.mix_own(clean, ids)
        return self.noise_stream.mix(clean, labels)

    def test_best_checkpoint(self, test_set, loader_kwargs, noise_stream):
        """TEST of the best checkpoint (``BEST_CHECKPOINT_KEY``) on ``test_set``, with ``noise_stream`` mixed in
        (a recipe passes WHAM!'s held-out ``tt``; None: clean), in the forward-only weight layout."""
        self.noise_stream = noise_stream
        set_weight_layout(self.modules, forward_only=True)
        self.evaluate(test_set, min_key=BEST_CHECKPOINT_KEY, test_loader_kwargs=loader_kwargs)

    def same_input_every_time(self, stage):
        """True where a clip is interpreted as the same input every time the stage sees it: without noise, and in
        VALID (its clips' own noise); then the scores that depend only on the classifier and the clip are kept."""
        return self.noise_stream is None or stage == sb.Stage.VALID

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
        """Records the registered measures of a ``MaskedOutput`` (``scoring.clip_scores``) and ``extra_scores``,
        more per-example ``[batch]`` scores of the interpreter (``in_masks`` of fine-tuning), and saves
        interpretations when it is time.

        What the measures read beside the output: the labels (where they are
        the classifier's classes), the event boxes (with ``events``), and in
        TEST the input split into its sources (``source_parts``; with noise
        mixed in, also into the clean clip and the noise, ``clean_clip_parts``) and, for a
        class-conditional method in a mixture of two classes, its mask of the
        class not decided (``other_class_inputs``).
        """
        labels = batch.class_string_encoded.data.squeeze(1)
        known_labels = labels if self.hparams.data_classes == self.hparams.n_classes else None
        parts = self.source_parts(output, batch, known_labels) if stage == sb.Stage.TEST else None
        clip = ClipScoring(
            output,
            classify_log_mag=functools.partial(self.logits_of_log_mag, clip_log_mag=output.features.log_mag),
            compute_stft=self.modules.compute_stft,
            compute_istft=self.modules.compute_istft,
            labels=known_labels,
            boxes=self.event_boxes(batch.id, output.mask.shape[1:], output.mask.device)
            if self.events is not None
            else None,
            parts=parts,
            clean_parts=clean_clip_parts(output.mixed, known_labels, output.logits.argmax(dim=1))
            if stage == sb.Stage.TEST
            else None,
            ids=batch.id,
            classifier_scores=self.classifier_scores if self.same_input_every_time(stage) else None,
            **(self.other_class_inputs(output, batch, known_labels) if parts is not None else {}),
        )
        scores = {**clip_scores(clip), **extra_scores}
        self.record_profiles(clip, labels)
        self.record_scores(scores, labels)
        if stage == sb.Stage.TEST:
            self.record_randomisation_similarity(output, labels)
        epoch = self.hparams.epoch_counter.current
        if if_main_process() and self.should_save_interpretations(stage, epoch):
            folder_name = "test" if stage == sb.Stage.TEST else f"valid_epoch{epoch}"
            folder = os.path.join(self.hparams.interpretations_folder, folder_name)
            listening = {name: scores[name] for name in SAVED_LISTENING_SCORES if name in scores}
            self.save_interpretations(batch.id, output, labels, folder, parts, listening)

    def record_profiles(self, clip, labels):
        """Keeps the frequency profiles of the batch's masks, of the classifier's own sensitivity and, with events,
        of the event boxes, for the stage's profile cosines."""
        self.stage_profiles["mask"].append(frequency_profile(clip.mask))
        sensitivity = clip.shared(
            ("sensitivity_profile",),
            lambda: {"sensitivity_profile": frequency_profile(as_mask(self.classifier_sensitivity(clip.output)))},
        )
        self.stage_profiles["sensitivity"].append(sensitivity["sensitivity_profile"])
        self.stage_profiles["classes"].append(labels)
        if clip.boxes is not None:
            self.stage_profiles["event"].append(frequency_profile(clip.boxes.float()))

    def source_parts(self, output, batch, labels):
        """``listening.source_parts`` of the batch: its input split into the decided class's sound and the rest,
        from what was mixed in and, where the data keeps them, the clips' event stems (``event_sig``); or None."""
        return source_parts(output.mixed, event_stems(batch), labels, output.logits.argmax(dim=1))

    def other_class_inputs(self, output, batch, labels):
        """In a mixture of two classes, for a class-conditional method, ``ClipScoring``'s ``other_class_mask`` (its
        mask of the class *not* decided) and ``other_parts`` (the input split for that class,
        ``listening.other_class_parts``); ``{}`` for other inputs and methods."""
        method = self.current_mask_method()
        parts, classes = other_class_parts(output.mixed, event_stems(batch), labels, output.logits.argmax(dim=1))
        if parts is None or not method.class_conditional:
            return {}
        mask = method.mask_for_classes(output.features, output.logits, output.feature_maps, classes).detach()
        return {"other_class_mask": mask, "other_parts": parts}

    def classifier_sensitivity(self, output):
        """``metrics.input_sensitivity`` of the classifier at the clips of ``output``, for its decisions:
        ``[batch, frames', freq]``. Where its classes' profiles (``sensitivity_profile_cosine``) are alike, the
        classifier's decision moves with the same bands for every class, and masks learnt from it tend to keep
        those bands whatever the class."""
        log_mag = crop_frames(output.features.log_mag, output.mask.shape[1])
        logits_of = functools.partial(self.logits_of_log_mag, clip_log_mag=output.features.log_mag)
        return input_sensitivity(log_mag, logits_of, output.logits.argmax(dim=1))

    def logits_of_log_mag(self, log_mag, clip_log_mag):
        """The classifier's logits ``[batch, n_classes]`` on a ``log1p`` magnitude ``[batch, frames', freq]``, in
        the normalisation of the clips ``clip_log_mag`` ``[batch, frames, freq]``."""
        return self.classify(self.input_from_log_mag(log_mag, clip_log_mag))[0]

    @torch.no_grad()
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
        trained_ranks = centred_ranks(trained)  # ranked once: every step and the floor compare with it
        scores = {}
        for step, (_, classifier, method) in enumerate(self.randomised, start=1):
            with torch.no_grad():
                _, feature_maps = classifier(features.classifier_input)
            mask = method.mask(features, output.logits[:count], feature_maps)
            scores[f"randomisation_step_{step}"] = spearman_similarity(trained, mask, ranks=trained_ranks)
        scores["randomisation_similarity"] = scores[f"randomisation_step_{len(self.randomised)}"]
        if count > 1:
            scores["randomisation_floor"] = spearman_similarity(
                trained, trained.roll(1, dims=0), ranks=trained_ranks, other_ranks=trained_ranks.roll(1, dims=0)
            )
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
        self.current_stage = stage
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
        true class (``{class index: {name: mean}}``). A stage or a class whose
        scored clips are mostly unheard has no median of its heard ones
        (``listening.without_mostly_unheard``).
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
        class_means, class_counts = per_class_means(scores, classes, n_classes)  # [names, n_classes]
        overall = torch.stack([*(stage_value(name, scores[name]) for name in names), *whole_stage.values()])
        values = torch.cat([overall, class_means.flatten(), class_counts.flatten()]).tolist()  # one host copy
        # A score no clip has a value of (every interpretation near-silent) is left out.
        stats.update((name, value) for name, value in zip(names, values[: len(names)]) if math.isfinite(value))
        # Fewer than two classes have no profile cosine.
        stats.update(
            (key, value) for key, value in zip(whole_stage, values[len(names) : len(overall)]) if math.isfinite(value)
        )
        per_class = values[len(overall) :]
        per_class_stats = per_class_table(
            names, per_class[: len(per_class) // 2], per_class[len(per_class) // 2 :], n_classes
        )
        self.per_class_stats = {index: without_mostly_unheard(row) for index, row in per_class_stats.items()}
        stats.update(class_collapse_stats(self.per_class_stats))
        return without_mostly_unheard(stats)

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

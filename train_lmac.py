#!/usr/bin/env python3
"""Trains an L-MAC interpreter of a frozen CNN14 ESC-50 classifier.

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --add_wham_noise True --wham_folder /data/wham_noise

Fine-tuning with the cross-correlation guidance:

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --finetuning True --pretrained_interpreter path/psi_model.ckpt --g_w 4

Evaluation only (the run's best checkpoint, or ``--pretrained_interpreter``):

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 --test_only True

The method, its formulas and defaults are those of ``LMAC_SPEC.md``.
"""

import dataclasses
import logging
import os
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from cnn14_family import decode_any_length
from esc50_prepare import prepare_datasets, validate_fold_lists
from features import SpectralFeatures
from interpreter_brain import (
    BEST_CHECKPOINT_KEY,
    end_distributed_run,
    InterpreterBrain,
    crop_frames,
    event_boxes,
    interpretation_scores,
    localization_ratio,
    masked_log_magnitudes,
    set_weight_layout,
    to_device,
)
from wham_prepare import make_noise_stream

logger = logging.getLogger(__name__)

CROSSCOR_TYPES = ("conv", "dotp")
GUIDELOSS_TYPES = ("binary", "reconstruction")
OVERLAP_TYPES = ("mixtures", "white_noise", "speech")


def crosscor(spectrogram, template, kind):
    """Per-example normalised cross-correlation of two spectrograms at zero lag.

    ``dotp``: ``mean(a * b) / (rms(a) * rms(b))``, the uncentred cosine
    similarity. ``conv``: both zero-meaned per example, then a grouped 2-D
    convolution of the spectrogram with the same-size template, divided by
    ``sqrt(sum a^2 * sum b^2)``: a Pearson correlation.

    Arguments
    ---------
    spectrogram, template : torch.Tensor
        ``[batch, frames, freq]``, same shape.
    kind : str
        ``conv`` or ``dotp``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[-1, 1]``; 0 where either input is constant zero.

    Example
    -------
    >>> x = torch.rand(2, 5, 4)
    >>> torch.allclose(crosscor(x, 3 * x, "conv"), torch.ones(2)), torch.allclose(crosscor(x, x, "dotp"), torch.ones(2))
    (True, True)
    """
    if kind not in CROSSCOR_TYPES:
        raise ValueError(f"crosscortype={kind!r}; accepted values are {CROSSCOR_TYPES}.")
    if spectrogram.shape != template.shape or spectrogram.dim() != 3:
        raise ValueError(
            f"crosscor needs two [batch, frames, freq] tensors of one shape; got "
            f"{tuple(spectrogram.shape)} and {tuple(template.shape)}."
        )
    tiny = torch.finfo(spectrogram.dtype).tiny
    if kind == "dotp":
        rms_product = spectrogram.pow(2).mean(dim=(1, 2)).sqrt() * template.pow(2).mean(dim=(1, 2)).sqrt()
        return (spectrogram * template).mean(dim=(1, 2)) / rms_product.clamp_min(tiny)
    centred = spectrogram - spectrogram.mean(dim=(1, 2), keepdim=True)
    centred_template = template - template.mean(dim=(1, 2), keepdim=True)
    batch = spectrogram.shape[0]
    correlation = F.conv2d(centred.unsqueeze(0), centred_template.unsqueeze(1), groups=batch).flatten()  # [batch]
    energy = centred.pow(2).sum(dim=(1, 2)) * centred_template.pow(2).sum(dim=(1, 2))
    return correlation / energy.sqrt().clamp_min(tiny)


def tv_loss(mask):
    """Per-example total variation of a mask, halved as in ``LMAC_SPEC.md``.

    ``TV_b / 2`` with ``TV_b = sum (M[:, 1:] - M[:, :-1])^2 + sum (M[1:, :] - M[:-1, :])^2``.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames, freq]``.

    Returns
    -------
    torch.Tensor
        ``[batch]``.

    Example
    -------
    >>> tv_loss(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
    tensor([1.])
    """
    along_freq = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).sum(dim=(1, 2))
    along_time = (mask[:, 1:, :] - mask[:, :-1, :]).pow(2).sum(dim=(1, 2))
    return (along_freq + along_time) / 2


def oracle_mask(clean_log_mag, bin_th):
    """Binary oracle ``Lc >= bin_th * max(Lc)`` per example, ``[batch, frames, freq]`` as float."""
    peak = clean_log_mag.amax(dim=(1, 2), keepdim=True)
    return (clean_log_mag >= bin_th * peak).float()


def guidance_per_example(mask, masked_in, clean_log_mag, kind, bin_th):
    """Per-example fine-tuning guidance before ``keep`` and ``g_w`` weigh it.

    ``binary``: ``BCE(M, Lc >= bin_th * max Lc)``; ``reconstruction``:
    ``mean((M * L - Lc)^2)``.

    Arguments
    ---------
    mask, masked_in, clean_log_mag : torch.Tensor
        ``[batch, frames', freq]``: the mask, ``M * L`` and the clean ``Lc``.
    kind : str
        ``binary`` or ``reconstruction``.
    bin_th : float

    Returns
    -------
    torch.Tensor
        ``[batch]``.
    """
    if kind == "binary":
        target = oracle_mask(clean_log_mag, bin_th)
        return F.binary_cross_entropy(mask, target, reduction="none").mean(dim=(1, 2))
    if kind == "reconstruction":
        return (masked_in - clean_log_mag).pow(2).mean(dim=(1, 2))
    raise ValueError(f"guidelosstype={kind!r}; accepted values are {GUIDELOSS_TYPES}.")


@dataclasses.dataclass
class LMACOutput:
    """What ``compute_forward`` computes once per batch.

    Shapes: ``wavs`` ``[batch, samples]`` (the interpreted input) and
    ``clean_wavs`` (before any noise; the same tensor without it),
    ``logits*`` ``[batch, n_classes]``, ``mask`` and ``log_mag_masked_in``
    (``M * L``) ``[batch, frames', freq]``.
    """

    wavs: torch.Tensor
    clean_wavs: torch.Tensor
    features: SpectralFeatures
    logits: torch.Tensor
    mask: torch.Tensor
    log_mag_masked_in: torch.Tensor
    logits_masked_in: torch.Tensor
    logits_masked_out: torch.Tensor


class LMAC(InterpreterBrain):
    """L-MAC: a decoder ``psi`` maps classifier feature maps to a mask over the linear STFT.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.Brain``.
    noise_stream : object with ``mix_into(clean)`` or None
        Mixed into every batch when given: WHAM! noise (``add_wham_noise``)
        or an evaluation overlap.
    """

    def __init__(self, *args, noise_stream=None, mask_method=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.noise_stream = noise_stream
        self.mask_method = mask_method
        self.events = None

    def compute_forward(self, batch, stage):
        """Classifier, mask, and the masked-in and masked-out classifications."""
        wavs, clean, features, logits, feature_maps = self.classify_batch(batch)
        mask = self.compute_mask(features, logits, feature_maps)
        return self.masked_output(wavs, clean, features, logits, mask)

    def classify_batch(self, batch):
        """The interpreted input, its features and the frozen classifier's answer on it.

        Returns
        -------
        wavs, clean : torch.Tensor
            ``[batch, samples]``: with noise added, and before.
        features : SpectralFeatures
        logits : torch.Tensor
            ``[batch, n_classes]``.
        feature_maps : tuple of torch.Tensor
        """
        batch = batch.to(self.device, non_blocking=True)  # from pinned memory on CUDA: no wait
        clean, _ = batch.sig  # [batch, samples]
        wavs = self.add_noise(clean)
        features = self.compute_features(wavs)
        with torch.no_grad():
            logits, feature_maps = self.classify(features.mel_input)
        return wavs, clean, features, logits, feature_maps

    def compute_mask(self, features, logits, feature_maps):
        """The mask ``[batch, frames, freq]``: the decoder's sigmoid, or ``mask_method``'s when one is set.

        ``mask_method`` (a baseline of ``eval.py``) has a ``name`` and is
        called as ``mask_method(features, logits, feature_maps)``.
        """
        if self.mask_method is not None:
            return self.mask_method(features, logits, feature_maps)
        return torch.sigmoid(decode_any_length(self.modules.psi, feature_maps, features.log_mag.shape[1]))

    def test_log_meta(self):
        """The loaded epoch for L-MAC's decoder; the method's name for another mask method."""
        if self.mask_method is not None:
            return {"method": self.mask_method.name}
        return super().test_log_meta()

    def masked_output(self, wavs, clean, features, logits, mask):
        """Classifies the masked-in ``M * L`` and masked-out ``(1 - M) * L``; returns an ``LMACOutput``."""
        masked_in, masked_out = masked_log_magnitudes(mask, features.log_mag)
        logits_masked_in, _ = self.classify(self.mel_input_from_log_mag(masked_in))
        logits_masked_out, _ = self.classify(self.mel_input_from_log_mag(masked_out))
        return LMACOutput(wavs, clean, features, logits, mask, masked_in, logits_masked_in, logits_masked_out)

    def add_noise(self, clean):
        """The clean batch mixed by the noise stream, or ``clean`` itself when there is none."""
        if self.noise_stream is None:
            return clean
        return self.noise_stream.mix_into(clean)

    def compute_objectives(self, output, batch, stage):
        """The L-MAC loss; in VALID and TEST also records every metric and saves interpretations."""
        decision = output.logits.argmax(dim=1)
        loss_in = F.cross_entropy(output.logits_masked_in, decision)
        loss_out = -F.cross_entropy(output.logits_masked_out, decision)
        keep, guidance = self.guidance(output)
        regulariser_weight = 1.0 - keep
        loss = (
            self.hparams.l_in_w * loss_in
            + self.hparams.l_out_w * loss_out
            + self.hparams.reg_w_l1 * (regulariser_weight * output.mask.abs().mean(dim=(1, 2))).mean()
            + self.hparams.g_w * guidance
        )
        if self.hparams.reg_w_tv:  # 0 by default: then neither TV nor its backward is computed
            loss = loss + self.hparams.reg_w_tv * (regulariser_weight * tv_loss(output.mask)).mean()
        if stage != sb.Stage.TRAIN:
            self.record_stage_outputs(output, batch, stage, keep)
        return loss

    def guidance(self, output):
        """``keep`` (``[batch]``, 1 where the guidance applies) and the guidance loss (scalar).

        Without fine-tuning no sample is kept and the guidance is 0.
        """
        if not self.hparams.finetuning:
            zeros = torch.zeros(output.mask.shape[0], device=output.mask.device)
            return zeros, zeros.sum()
        masked_in = output.log_mag_masked_in
        clean = crop_frames(self.clean_log_magnitude(output), output.mask.shape[1])
        keep = (crosscor(clean, masked_in, self.hparams.crosscortype) >= self.hparams.crosscor_th).float()
        per_example = guidance_per_example(
            output.mask, masked_in, clean, self.hparams.guidelosstype, self.hparams.bin_th
        )
        return keep, (keep * per_example).mean()

    def clean_log_magnitude(self, output):
        """``log1p|STFT|`` of the clean input ``[batch, frames, freq]``; computed only when noise was added."""
        if output.clean_wavs is output.wavs:
            return output.features.log_mag
        return self.compute_features(output.clean_wavs).log_mag

    def record_stage_outputs(self, output, batch, stage, keep):
        """Records metrics, accuracy and ``in_masks``; saves interpretations when it is time."""
        scores = interpretation_scores(output.logits, output.logits_masked_in, output.logits_masked_out, output.mask)
        labels = batch.class_string_encoded.data.squeeze(1)
        scores["acc"] = (output.logits.argmax(dim=1) == labels).float()
        if keep is not None and self.hparams.finetuning:
            scores["in_masks"] = keep
        if self.events is not None:
            scores["localization"] = self.localization(batch.id, output.mask)
        self.record_scores(scores)
        epoch = self.hparams.epoch_counter.current
        if if_main_process() and self.should_save_interpretations(stage, epoch):
            folder_name = "test" if stage == sb.Stage.TEST else f"valid_epoch{epoch}"
            folder = os.path.join(self.hparams.interpretations_folder, folder_name)
            self.save_interpretations(batch.id, output.wavs, output.mask, output.features, folder)

    def localization(self, ids, mask):
        """Localisation ratio ``[batch]`` of ``mask`` against each clip's event box in ``self.events``."""
        boxes = event_boxes(
            [self.events.loc[clip_id] for clip_id in ids], mask.shape[1:], self.hparams.compute_stft.hop_length,
            self.hparams.sample_rate, self.hparams.n_fft,
        )  # fmt: skip
        return localization_ratio(mask.detach().float(), to_device(boxes, mask.device))


def validate_hparams(hparams):
    """Checks the settings that would fail later, before any work starts.

    Raises
    ------
    ValueError
        An unknown ``crosscortype``, ``guidelosstype`` or ``overlap_type``,
        fine-tuning without ``pretrained_interpreter``, WHAM! noise without
        ``wham_folder``, bad fold lists.
    FileNotFoundError
        A checkpoint path that does not exist, or ``test_only`` with nothing to test.
    """
    if hparams["crosscortype"] not in CROSSCOR_TYPES:
        raise ValueError(f"crosscortype={hparams['crosscortype']!r}; accepted values are {CROSSCOR_TYPES}.")
    if hparams["guidelosstype"] not in GUIDELOSS_TYPES:
        raise ValueError(f"guidelosstype={hparams['guidelosstype']!r}; accepted values are {GUIDELOSS_TYPES}.")
    if hparams["finetuning"] and not hparams["pretrained_interpreter"]:
        raise ValueError(
            "finetuning=True needs a trained decoder: pass --pretrained_interpreter path/psi_model.ckpt."
        )
    path = hparams["pretrained_interpreter"]
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained_interpreter={path!r} does not exist; give the path of a psi_model.ckpt file.")
    if hparams["use_pretrained"]:
        for key in ("embedding_model_path", "classifier_model_path"):
            if _looks_local(hparams[key]) and not os.path.isfile(hparams[key]):
                raise FileNotFoundError(
                    f"{key}={hparams[key]!r} does not exist; give a local .ckpt file, a HuggingFace path "
                    "such as speechbrain/cnn14-esc50/embedding_model.ckpt, or --use_pretrained False (tests only)."
                )
    if hparams["add_wham_noise"] and not hparams["wham_folder"]:
        raise ValueError("add_wham_noise=True needs --wham_folder (a folder holding tr/*.wav).")
    if hparams["overlap_type"] is not None and hparams["overlap_type"] not in OVERLAP_TYPES:
        raise ValueError(
            f"overlap_type={hparams['overlap_type']!r}; accepted values are {OVERLAP_TYPES} (or null for none)."
        )
    validate_fold_lists(**{key: hparams[key] for key in ("train_fold_nums", "valid_fold_nums", "test_fold_nums")})
    no_checkpoint = hparams["checkpointer"].find_checkpoint(min_key=BEST_CHECKPOINT_KEY) is None
    if hparams["test_only"] and no_checkpoint and not hparams["pretrained_interpreter"]:
        raise FileNotFoundError(
            f"test_only=True, but {hparams['save_folder']} holds no checkpoint and no --pretrained_interpreter "
            "was given; train first or pass --pretrained_interpreter path/psi_model.ckpt."
        )


def _looks_local(path):
    """True for paths meant as local files: absolute, relative to ``.``/``~``, or under an existing folder."""
    return os.path.isabs(path) or path.startswith((".", "~")) or os.path.isdir(path.split("/")[0])


def load_classifier(hparams):
    """Loads the classifier weights through the Pretrainer, unless ``use_pretrained`` is False.

    Raises
    ------
    FileNotFoundError
        A weight file is neither a local file nor fetchable; the message names the setting.
    """
    if not hparams["use_pretrained"]:
        logger.warning("use_pretrained=False: the classifier keeps random weights (for tests only).")
        return
    pretrainer = hparams["pretrainer"]
    try:
        run_on_main(pretrainer.collect_files)
    except (OSError, ValueError, RuntimeError) as error:
        raise FileNotFoundError(
            "Could not get the classifier weights "
            f"(embedding_model_path={hparams['embedding_model_path']!r}, "
            f"classifier_model_path={hparams['classifier_model_path']!r}): {error}. "
            "Give local .ckpt files or a reachable HuggingFace path."
        ) from error
    check_classifier_outputs(hparams, os.path.join(str(pretrainer.collect_in), "classifier.ckpt"))
    pretrainer.load_collected()


def check_classifier_outputs(hparams, classifier_file):
    """Raises when the classifier checkpoint's number of outputs is not ``n_classes``."""
    weight = torch.load(classifier_file, map_location="cpu").get("w.weight")
    if weight is not None and weight.shape[0] != hparams["n_classes"]:
        raise ValueError(
            f"classifier_model_path={hparams['classifier_model_path']!r} has {weight.shape[0]} outputs, "
            f"but n_classes={hparams['n_classes']}; pass --n_classes {weight.shape[0]} (and the data it was trained on)."
        )


def check_class_count(hparams, label_encoder):
    """Raises when the data's number of classes is not the classifier's ``n_classes``."""
    if len(label_encoder) != hparams["n_classes"]:
        raise ValueError(
            f"n_classes={hparams['n_classes']}, but the data in {hparams['data_folder']!r} has "
            f"{len(label_encoder)} classes; pass --n_classes {len(label_encoder)} with a classifier "
            "trained on these classes."
        )


def load_interpreter(psi_model, path, device):
    """Loads decoder weights (a state dict, e.g. ``psi_model.ckpt``) into ``psi_model``."""
    psi_model.load_state_dict(torch.load(path, map_location=device))
    logger.info("Loaded the interpreter from %s.", path)


def take_test_only_flag(argv):
    """Takes ``--test_only [True|False]`` (or ``--test_only=VALUE``) out of the command line.

    SpeechBrain parses ``--test_only`` as a bare flag, so ``--test_only True``
    would hand ``True`` to the previous override. The recipe reads the value
    as an ordinary hyperparameter instead, which ``Brain`` also picks up.

    Arguments
    ---------
    argv : list of str

    Returns
    -------
    argv : list of str
        Without the flag.
    value : str or None
        ``"True"``, ``"False"``, or None when the flag is absent.

    Example
    -------
    >>> take_test_only_flag(["h.yaml", "--test_only", "True", "--lr", "1"])
    (['h.yaml', '--lr', '1'], 'True')
    >>> take_test_only_flag(["h.yaml", "--test_only"])
    (['h.yaml'], 'True')
    """
    remaining, value, index = [], None, 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--test_only="):
            value = arg.split("=", 1)[1]
        elif arg == "--test_only":
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following in ("True", "False"):
                value = following
                index += 1
            else:
                value = "True"
        else:
            remaining.append(arg)
        index += 1
    return remaining, value


def main(argv):
    """Runs the recipe: validate, prepare data, load the classifier, train, test the best checkpoint.

    Returns
    -------
    brain : LMAC
        With the best checkpoint loaded and ``last_stage_stats`` of TEST.
    datasets : dict of str to DynamicItemDataset
    """
    argv, test_only = take_test_only_flag(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if test_only is not None:
        overrides = f"{overrides}\ntest_only: {test_only}"
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    validate_hparams(hparams)
    noise_stream = make_noise_stream(hparams)  # finds (or fails on) the WHAM! files before any work
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    datasets, label_encoder = prepare_datasets(hparams)
    check_class_count(hparams, label_encoder)
    load_classifier(hparams)
    brain = LMAC(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        noise_stream=noise_stream,
    )
    if hparams["pretrained_interpreter"]:
        load_interpreter(brain.modules.psi, hparams["pretrained_interpreter"], brain.device)
    if not hparams["test_only"]:
        brain.fit(
            hparams["epoch_counter"],
            train_set=datasets["train"],
            valid_set=datasets["valid"],
            train_loader_kwargs=hparams["train_dataloader_options"],
            valid_loader_kwargs=hparams["test_dataloader_options"],
        )
    set_weight_layout(brain.modules, forward_only=True)
    brain.evaluate(
        datasets["test"], min_key=BEST_CHECKPOINT_KEY, test_loader_kwargs=hparams["test_dataloader_options"]
    )
    end_distributed_run()
    return brain, datasets


if __name__ == "__main__":
    main(sys.argv[1:])

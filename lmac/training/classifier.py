"""The classifier's Brain (any classifier family), its confusion matrix, and the export of its weights
for the interpreters.
"""

import logging
import os
import shutil

import speechbrain as sb
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from speechbrain.utils.distributed import if_main_process

from lmac.data.esc50 import LABEL_ENCODER_FILE
from lmac.features import spectral_features
from lmac.reporting.curves import save_training_curves
from lmac.training.device import CudaFedBrain

logger = logging.getLogger(__name__)


BEST_CLASSIFIER_KEY = "acc"


EXPORTED_MODULES = ("embedding_model", "classifier")


class ClassifierBrain(CudaFedBrain):
    """The family's embedding model and head (CNN14 + linear by default), trained with cross-entropy on the labels.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.Brain``.
    noise_stream : WhamNoiseStream or None
        Mixed into the training batches at 0 dB when given.
    class_names : list of str
        Name of each class index, for the confusion matrix.
    """

    def __init__(self, *args, noise_stream=None, class_names=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.noise_stream = noise_stream
        self.class_names = list(class_names)

    def compute_forward(self, batch, stage):
        """Logits ``[batch, n_classes]`` of the (noisy, in training) input."""
        batch = batch.to(self.device, non_blocking=True)  # from pinned memory on CUDA: no wait
        wavs, _ = batch.sig  # [batch, samples]
        if stage == sb.Stage.TRAIN and self.noise_stream is not None:
            wavs = self.noise_stream.mix_into(wavs)
        features = spectral_features(wavs, self.modules.compute_stft, self.modules.classifier_input)
        embedding, _ = self.modules.embedding_model(features.classifier_input)
        return self.modules.classifier(embedding).squeeze(1)

    def compute_objectives(self, logits, batch, stage):
        """Cross-entropy against the labels; records predictions outside training."""
        labels = batch.class_string_encoded.data.squeeze(1)
        if stage != sb.Stage.TRAIN:
            self.predictions.append(logits.argmax(dim=1))  # on the device until the stage ends
            self.labels.append(labels)
        return F.cross_entropy(logits, labels)

    def on_stage_start(self, stage, epoch=None):
        """Empties the prediction lists of this stage."""
        self.predictions, self.labels = [], []

    def stage_accuracy(self):
        """Accuracy over the predictions recorded in this stage, a plain float."""
        return float((torch.cat(self.predictions) == torch.cat(self.labels)).float().mean())

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate, keeps the most accurate checkpoint; draws the test confusion matrix."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": float(stage_loss)}
            return
        stats = {"loss": float(stage_loss), BEST_CLASSIFIER_KEY: self.stage_accuracy()}
        if stage == sb.Stage.VALID:
            old_lr, _ = self.hparams.lr_annealing([self.optimizer], current_epoch=epoch, current_loss=stage_loss)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr}, train_stats=self.train_stats, valid_stats=stats
            )
            self.checkpointer.save_and_keep_only(meta=stats, max_keys=[BEST_CLASSIFIER_KEY])
            if if_main_process():
                save_training_curves(self.hparams.train_log, "Classifier training")
            return
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
        )
        self.test_stats = stats
        if if_main_process():
            predictions, labels = torch.cat(self.predictions).cpu(), torch.cat(self.labels).cpu()
            matrix = confusion_matrix(predictions, labels, self.hparams.n_classes)
            path = os.path.join(self.hparams.output_folder, "confusion_matrix.png")
            save_confusion_matrix(matrix, self.class_names, path)


def confusion_matrix(predictions, labels, n_classes):
    """Counts ``[true class, predicted class]``.

    Arguments
    ---------
    predictions, labels : torch.Tensor
        ``[n]`` class indices.
    n_classes : int

    Returns
    -------
    torch.Tensor
        ``[n_classes, n_classes]``, int64.

    Example
    -------
    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
    tensor([[1, 1],
            [0, 1]])
    """
    return torch.bincount(labels * n_classes + predictions, minlength=n_classes**2).reshape(n_classes, n_classes)


def save_confusion_matrix(matrix, class_names, path):
    """Saves the confusion matrix ``[n_classes, n_classes]`` (rows: true class) as a PNG, rows of seen classes only."""
    seen = matrix.sum(dim=1) > 0
    shown = matrix[seen][:, seen]
    names = [name for name, keep in zip(class_names, seen.tolist()) if keep]
    size = 3 + 0.35 * len(names)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    axis.imshow(shown.numpy(), cmap="Blues")
    for (row, column), count in zip(
        torch.cartesian_prod(torch.arange(len(names)), torch.arange(len(names))).tolist(), shown.flatten().tolist()
    ):
        if count:
            axis.text(column, row, str(count), ha="center", va="center", fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def export_classifier(checkpointer, save_folder, export_folder):
    """Copies the best checkpoint's weights (and the label encoder) to ``export_folder``.

    Returns
    -------
    dict of str to str
        Paths of ``embedding_model.ckpt`` and ``classifier.ckpt``.
    """
    best = checkpointer.find_checkpoint(max_key=BEST_CLASSIFIER_KEY)
    os.makedirs(export_folder, exist_ok=True)
    exported = {}
    for name in EXPORTED_MODULES:
        exported[name] = os.path.join(export_folder, f"{name}.ckpt")
        shutil.copyfile(os.path.join(best.path, f"{name}.ckpt"), exported[name])
    shutil.copyfile(os.path.join(save_folder, LABEL_ENCODER_FILE), os.path.join(export_folder, LABEL_ENCODER_FILE))
    logger.info(
        "Exported the classifier of %s (valid acc %.3f) to %s.",
        best.path,
        best.meta[BEST_CLASSIFIER_KEY],
        export_folder,
    )
    return exported

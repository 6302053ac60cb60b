"""Training curves: a picture of SpeechBrain's ``train_log.txt``, redrawn after every epoch.

SpeechBrain's ``FileTrainLogger`` writes a line per epoch::

    epoch: 3, lr: 1.00e-03 - train loss: 8.73e-01 - valid loss: -5.31e-02, valid fid_in: 9.88e-01, ...

and a ``test`` line at the end. ``read_train_log`` turns the epoch lines into
dicts; ``save_training_curves`` draws the train and validation loss, then one
panel per validation metric, against the epoch. The log is the record (it
survives a resumed run), so the picture always shows the whole training.
"""

import math
import os

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Inches of one panel of the picture.
PANEL_WIDTH, PANEL_HEIGHT = 3.6, 2.8


def read_train_log(path):
    """The epoch lines of a SpeechBrain ``train_log.txt``, as dicts of floats.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> with open(path, "w") as file:
    ...     _ = file.write("epoch: 1, lr: 1.00e-03 - train loss: 2.5 - valid loss: 1.5, valid acc: 7.25e-01\\n"
    ...                    "Epoch loaded: 1 - test loss: 1.4, test acc: 0.75\\n")
    >>> read_train_log(path)
    [{'epoch': 1.0, 'lr': 0.001, 'train loss': 2.5, 'valid loss': 1.5, 'valid acc': 0.725}]
    """
    rows = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.startswith("epoch:"):
                continue
            pairs = (item.split(": ", 1) for part in line.strip().split(" - ") for item in part.split(", "))
            rows.append({key: float(value) for key, value in pairs})
    return rows


def save_training_curves(log_path, title):
    """Draws the epochs of ``log_path`` into ``training_curves.png`` beside it; returns False when the log has none yet.

    The first panel holds the train and valid loss; each other ``valid``
    metric has its own panel.
    """
    rows = read_train_log(log_path) if os.path.isfile(log_path) else []
    if not rows:
        return False
    epochs = [row["epoch"] for row in rows]
    metrics = [key for key in rows[-1] if key.startswith("valid ") and key != "valid loss"]
    columns = min(4, 1 + len(metrics))
    lines = math.ceil((1 + len(metrics)) / columns)
    figure = Figure(figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * lines))
    axes = figure.subplots(lines, columns, squeeze=False).flatten()
    for name in ("train loss", "valid loss"):
        axes[0].plot(epochs, [row.get(name, math.nan) for row in rows], marker=".", label=name.split()[0])
    axes[0].set_title("loss")
    axes[0].legend()
    for axis, name in zip(axes[1:], metrics):
        axis.plot(epochs, [row.get(name, math.nan) for row in rows], marker=".")
        axis.set_title(name)
    for axis in axes[: 1 + len(metrics)]:
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes[1 + len(metrics) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    fixed_layout(figure, lines, columns)
    figure.savefig(os.path.join(os.path.dirname(os.path.abspath(log_path)), "training_curves.png"), dpi=80)
    return True


def fixed_layout(figure, lines, columns):
    """Margins and gaps for a grid of ``lines`` x ``columns`` panels of ``PANEL_WIDTH`` x ``PANEL_HEIGHT``, in
    inches as ``tight_layout`` leaves them for a title, tick labels and an x label: the same look, without
    measuring every text of the figure at each epoch."""
    width, height = PANEL_WIDTH * columns, PANEL_HEIGHT * lines
    figure.subplots_adjust(
        left=0.55 / width,
        right=1 - 0.15 / width,
        bottom=0.45 / height,
        top=1 - 0.8 / height,
        wspace=0.55 / (PANEL_WIDTH - 0.7),
        hspace=0.75 / (PANEL_HEIGHT - 0.75),
    )

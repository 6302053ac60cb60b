"""ESC-50 data preparation and the datasets the recipes train on.

The official ESC-50 layout is::

    <data_folder>/meta/esc50.csv   # filename,fold,target,category,esc10,src_file,take
    <data_folder>/audio/*.wav      # 2000 clips, 44.1 kHz mono, 5 s

``prepare_esc50`` turns it into three SpeechBrain JSON manifests (train, valid
and test fold lists). ``dataio_prep`` turns the manifests into
``DynamicItemDataset`` objects that yield 16 kHz mono peak-normalised audio and
encoded labels.
``esc50_prepare.py`` prepares a folder by hand.
"""

import hashlib
import json
import logging
import os
import shutil

import pandas as pd
import soundfile as sf
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.data_utils import download_file
from speechbrain.utils.distributed import run_on_main
from tqdm import tqdm

from lmac.audio.io import check_wav_complete, fit_length, peak_normalize, read_clip

logger = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
ESC50_ARCHIVE_FOLDER = "ESC-50-master"
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
VALID_FOLDS = (1, 2, 3, 4, 5)
FOLD_LIST_NAMES = ("train_fold_nums", "valid_fold_nums", "test_fold_nums")
PREPARATION_RECORD = "esc50_prepare_record.json"
LABEL_ENCODER_FILE = "label_encoder.txt"
ESC50_LAYOUT_HELP = (
    "Expected the official ESC-50 layout: <data_folder>/meta/esc50.csv "
    f"(columns {','.join(ESC50_COLUMNS)}) and <data_folder>/audio/*.wav. "
    f"Download {ESC50_URL}, unzip it and pass the folder that holds meta/ and "
    "audio/ as --data_folder, or run `python make_synthetic_data.py` for a "
    "synthetic ESC-50-format folder."
)


def prepare_esc50(
    data_folder,
    audio_data_folder,
    save_json_train,
    save_json_valid,
    save_json_test,
    train_fold_nums=(1, 2, 3),
    valid_fold_nums=(4,),
    test_fold_nums=(5,),
    skip_manifest_creation=False,
):
    """Writes SpeechBrain JSON manifests for the train, valid and test folds.

    Each manifest maps a clip id (the file name without ``.wav``) to
    ``{"wav", "class_string", "class_id", "fold", "duration"}``. Files that
    cannot be read are left out with a warning. A second call with the same
    arguments and unchanged data returns without redoing the work.

    Arguments
    ---------
    data_folder : str
        Folder holding ``meta/esc50.csv``. When it holds no ESC-50, the
        official archive is downloaded into it.
    audio_data_folder : str
        Folder holding the wav files, usually ``<data_folder>/audio``.
    save_json_train, save_json_valid, save_json_test : str
        Paths of the three manifests to write.
    train_fold_nums, valid_fold_nums, test_fold_nums : list of int
        Disjoint, non-empty lists of fold numbers in 1..5.
    skip_manifest_creation : bool
        Use the manifests that are already there and write nothing.

    Raises
    ------
    ValueError
        A fold list is invalid, the csv is malformed, or a fold list selects
        no readable clip. Raised before anything is written.
    FileNotFoundError
        No ESC-50 in ``data_folder`` and the download failed, or
        ``skip_manifest_creation`` with a manifest missing.
    """
    fold_lists = validate_fold_lists(
        train_fold_nums=train_fold_nums,
        valid_fold_nums=valid_fold_nums,
        test_fold_nums=test_fold_nums,
    )
    manifest_paths = dict(zip(FOLD_LIST_NAMES, (save_json_train, save_json_valid, save_json_test)))
    if skip_manifest_creation:
        _require_existing_manifests(manifest_paths.values())
        return
    ensure_esc50(data_folder, audio_data_folder)
    csv_path = os.path.join(data_folder, "meta", "esc50.csv")
    metadata = read_esc50_metadata(csv_path)
    record = _preparation_record(csv_path, metadata, audio_data_folder, fold_lists, manifest_paths)
    record_path = os.path.join(os.path.dirname(os.path.abspath(save_json_train)), PREPARATION_RECORD)
    if _is_prepared(record_path, record, manifest_paths.values()):
        logger.info("ESC-50 manifests in %s are up to date; skipping preparation.", os.path.dirname(record_path))
        return
    entries, skipped = scan_clips(metadata, audio_data_folder)
    manifests = {name: _select_folds(entries, folds) for name, folds in fold_lists.items()}
    for name, manifest in manifests.items():
        if not manifest:
            raise ValueError(
                f"{name}={fold_lists[name]} selects no readable clip in "
                f"{csv_path}; choose folds that have clips."
            )
    for name, manifest in manifests.items():
        _write_json_atomically(manifest_paths[name], manifest)
    _write_json_atomically(record_path, record)
    logger.info(
        "ESC-50 preparation: %d files kept, %d skipped (train %d, valid %d, test %d).",
        len(entries),
        len(skipped),
        *(len(manifests[name]) for name in FOLD_LIST_NAMES),
    )


def validate_fold_lists(**fold_lists):
    """Checks fold lists and returns them as sorted lists.

    Arguments
    ---------
    **fold_lists : list of int
        Named fold lists, e.g. ``train_fold_nums=[1, 2, 3]``.

    Returns
    -------
    dict of str to list of int

    Raises
    ------
    ValueError
        Naming the list: not a list of whole numbers, empty, repeated or out-of-range
        values, or two lists sharing a fold.

    Example
    -------
    >>> validate_fold_lists(train_fold_nums=[2, 1], valid_fold_nums=[4])
    {'train_fold_nums': [1, 2], 'valid_fold_nums': [4]}
    >>> validate_fold_lists(train_fold_nums=[1, 6], valid_fold_nums=[4])
    Traceback (most recent call last):
      ...
    ValueError: train_fold_nums=[1, 6] has folds outside 1..5; accepted values are 1, 2, 3, 4, 5.
    """
    accepted = ", ".join(str(fold) for fold in VALID_FOLDS)
    checked = {}
    for name, folds in fold_lists.items():
        if not isinstance(folds, (list, tuple)) or not all(
            isinstance(fold, int) and not isinstance(fold, bool) for fold in folds
        ):
            raise ValueError(f"{name}={folds!r} must be a list of fold numbers, e.g. [1, 2, 3]; accepted values are {accepted}.")
        if not folds:
            raise ValueError(f"{name} is empty; give at least one fold out of {accepted}.")
        if any(fold not in VALID_FOLDS for fold in folds):
            raise ValueError(f"{name}={list(folds)} has folds outside 1..5; accepted values are {accepted}.")
        if len(set(folds)) != len(folds):
            raise ValueError(f"{name}={list(folds)} repeats a fold; list each fold once.")
        checked[name] = sorted(folds)
    names = list(checked)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(set(checked[first]) & set(checked[second]))
            if shared:
                raise ValueError(
                    f"{first}={checked[first]} and {second}={checked[second]} share folds {shared}; "
                    "the lists must be disjoint."
                )
    return checked


def ensure_esc50(data_folder, audio_data_folder):
    """Makes sure ESC-50 is in ``data_folder``, downloading it if it is not.

    Arguments
    ---------
    data_folder : str
        Folder that should hold ``meta/esc50.csv``.
    audio_data_folder : str
        Folder that should hold the wav files.

    Raises
    ------
    FileNotFoundError
        The data is missing and could not be downloaded; the message gives the
        expected layout.
    """
    if _has_esc50(data_folder, audio_data_folder):
        return
    logger.info("No ESC-50 found in %s; trying to download %s.", data_folder, ESC50_URL)
    download_esc50(data_folder)
    if not _has_esc50(data_folder, audio_data_folder):
        raise FileNotFoundError(
            f"Downloaded ESC-50 into {data_folder!r}, but found no {audio_data_folder!r}. " + ESC50_LAYOUT_HELP
        )


def download_esc50(data_folder):
    """Downloads the official ESC-50 archive and puts its ``meta/`` and ``audio/`` in ``data_folder``.

    Arguments
    ---------
    data_folder : str
        Destination folder, created if needed.
    """
    download_dataset(ESC50_URL, data_folder, ESC50_ARCHIVE_FOLDER, ("meta", "audio"), ESC50_LAYOUT_HELP)


def download_dataset(url, folder, archive_folder, parts, layout_help):
    """Downloads a zip archive into ``folder`` and moves the named parts up into it.

    The archive goes to a ``.part`` file first, so an interrupted download is
    never unpacked. Parts that already exist in ``folder`` are left untouched.
    When the download fails, whatever it created is removed again.

    Arguments
    ---------
    url : str
        Address of a zip archive.
    folder : str
        Destination folder, created if needed.
    archive_folder : str
        Top folder inside the archive; the archive is saved as ``<archive_folder>.zip``.
    parts : tuple of str
        Sub-folders of ``archive_folder`` to move into ``folder``.
    layout_help : str
        What the user should put where, added to the error message.

    Raises
    ------
    FileNotFoundError
        The download or the unpacking failed (for instance offline); the
        message names the folder, the address, the cause and ``layout_help``.
    """
    try:
        _download_and_unpack(url, folder, archive_folder, parts)
    except (OSError, ValueError, shutil.ReadError) as error:
        raise FileNotFoundError(
            f"Found no data in {folder!r} and the download of {url} failed ({error}). {layout_help}"
        ) from error


def _download_and_unpack(url, folder, archive_folder, parts):
    created = not os.path.exists(folder)
    os.makedirs(folder, exist_ok=True)
    archive = os.path.join(folder, archive_folder + ".zip")
    partial = archive + ".part"
    try:
        if not os.path.isfile(archive):
            download_file(url, partial, replace_existing=True)
            os.replace(partial, archive)
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        elif os.path.exists(partial):
            os.remove(partial)
        raise
    shutil.unpack_archive(archive, folder)
    for part in parts:
        target = os.path.join(folder, part)
        if not os.path.exists(target):
            shutil.move(os.path.join(folder, archive_folder, part), target)


def read_esc50_metadata(csv_path):
    """Reads and checks ``esc50.csv``.

    Arguments
    ---------
    csv_path : str
        Path of the metadata file.

    Returns
    -------
    pandas.DataFrame
        One row per clip with at least ``filename, fold, target, category``.

    Raises
    ------
    ValueError
        Missing columns, repeated file names, or a category with two targets.
    """
    metadata = pd.read_csv(csv_path)
    missing = [column for column in ("filename", "fold", "target", "category") if column not in metadata]
    if missing:
        raise ValueError(f"{csv_path} lacks columns {missing}; ESC-50 has {','.join(ESC50_COLUMNS)}.")
    repeated = metadata["filename"][metadata["filename"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"{csv_path} lists these files more than once: {repeated[:5]}.")
    targets_per_class = metadata.groupby("category")["target"].nunique()
    ambiguous = targets_per_class[targets_per_class > 1].index.tolist()
    if ambiguous:
        raise ValueError(f"{csv_path}: categories {ambiguous} have more than one target id.")
    return metadata


def scan_clips(metadata, audio_data_folder):
    """Reads every listed clip and builds manifest entries for the readable ones.

    Arguments
    ---------
    metadata : pandas.DataFrame
        Rows of ``esc50.csv``.
    audio_data_folder : str
        Folder holding the audio files.

    Returns
    -------
    entries : dict of str to dict
        Clip id to manifest entry.
    skipped : list of str
        Paths of files that were missing, unreadable or empty.
    """
    entries, skipped = {}, []
    for row in tqdm(metadata.itertuples(index=False), total=len(metadata), desc="Checking ESC-50 audio"):
        path = os.path.abspath(os.path.join(audio_data_folder, row.filename))
        duration = _readable_duration(path)
        if duration is None:
            skipped.append(path)
            continue
        entries[os.path.splitext(row.filename)[0]] = {
            "wav": path,
            "class_string": str(row.category),
            "class_id": int(row.target),
            "fold": int(row.fold),
            "duration": duration,
        }
    return entries, skipped


def _readable_duration(path):
    """Returns the duration in seconds of a decodable, non-empty file, else None."""
    try:
        check_wav_complete(path)
        audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:
        logger.warning("Skipping unreadable audio file %s (%s).", path, error)
        return None
    if audio.shape[0] == 0:
        logger.warning("Skipping empty audio file %s.", path)
        return None
    return audio.shape[0] / sample_rate


def _has_esc50(data_folder, audio_data_folder):
    return os.path.isfile(os.path.join(data_folder, "meta", "esc50.csv")) and os.path.isdir(audio_data_folder)


def _select_folds(entries, folds):
    return {clip_id: entry for clip_id, entry in entries.items() if entry["fold"] in folds}


def _require_existing_manifests(paths):
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"skip_manifest_creation is True but these manifests do not exist: {missing}. "
            "Set skip_manifest_creation: False to create them."
        )


def _preparation_record(csv_path, metadata, audio_data_folder, fold_lists, manifest_paths):
    """Everything the manifests depend on: arguments, csv content and audio file stats."""
    with open(csv_path, "rb") as file:
        fingerprint = hashlib.sha1(file.read())
    for filename in metadata["filename"]:
        path = os.path.join(audio_data_folder, filename)
        stat = os.stat(path) if os.path.exists(path) else None
        fingerprint.update(f"{filename}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}".encode())
    return {
        "audio_data_folder": os.path.abspath(audio_data_folder),
        "fold_lists": fold_lists,
        "manifests": {name: os.path.abspath(path) for name, path in manifest_paths.items()},
        "input_fingerprint": fingerprint.hexdigest(),
    }


def _is_prepared(record_path, record, manifest_paths):
    if not os.path.isfile(record_path) or not all(os.path.isfile(path) for path in manifest_paths):
        return False
    with open(record_path, encoding="utf-8") as file:
        return json.load(file) == record


def _write_json_atomically(path, content):
    """Writes JSON to ``path`` through a temporary file, so no half-written file remains."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2)
    os.replace(temporary, path)


def build_label_encoder(datasets, encoder_path):
    """Loads the label encoder of an experiment, or creates it from the data.

    A new encoder gives the data's classes the indices ``0..N-1``, in the
    order of their ESC-50 ``class_id`` (on the whole of ESC-50, index and
    target are the same; on a subset, such as SpeechBrain's recipe-test
    sample with targets 0, 43 and 19, they are not, and a head of ``N``
    outputs reads them). An existing file (for instance the one shipped with
    a pretrained classifier) is reused as it is, after checking it knows
    every class in the data and its indices are ``0..N-1``.
    Under DDP only the main process writes the file (atomically), and every
    process loads it after a barrier.

    Arguments
    ---------
    datasets : list of DynamicItemDataset
        Datasets whose entries carry ``class_string`` and ``class_id``.
    encoder_path : str
        Where the encoder is stored (``label_encoder.txt`` of the experiment).

    Returns
    -------
    speechbrain.dataio.encoder.CategoricalEncoder
    """
    class_ids = {}
    for dataset in datasets:
        with dataset.output_keys_as(["class_string", "class_id"]):
            for item in dataset:
                class_ids[item["class_string"]] = item["class_id"]
    run_on_main(_save_new_label_encoder, args=[class_ids, encoder_path])
    encoder = CategoricalEncoder()
    encoder.load(encoder_path)
    unknown = sorted(set(class_ids) - set(encoder.lab2ind))
    if unknown:
        raise ValueError(
            f"Label encoder {encoder_path} does not know classes {unknown}; "
            "delete it to rebuild it from the data, or use the classifier's own encoder."
        )
    indices = sorted(encoder.ind2lab)
    if indices != list(range(len(indices))):
        raise ValueError(
            f"Label encoder {encoder_path} gives its {len(indices)} classes the indices {indices[:8]}..., not "
            f"0..{len(indices) - 1} (a file written from ESC-50 target ids); delete it to rebuild it from the data."
        )
    encoder.expect_len(len(encoder))
    return encoder


def _save_new_label_encoder(class_ids, encoder_path):
    """Writes an encoder of the classes of ``class_ids`` (class string to ESC-50 id) to ``encoder_path`` unless one
    is there: indices ``0..N-1`` in the order of the ids.

    The file is written under a temporary name and moved into place, so a
    reader never sees half of it.
    """
    if os.path.isfile(encoder_path):
        return
    encoder = CategoricalEncoder()
    for index, (class_string, _) in enumerate(sorted(class_ids.items(), key=lambda pair: pair[1])):
        encoder.enforce_label(class_string, index)
    os.makedirs(os.path.dirname(os.path.abspath(encoder_path)), exist_ok=True)
    partial = f"{encoder_path}.partial"
    encoder.save(partial)
    os.replace(partial, encoder_path)


# Each clip's parts, where a data set keeps them (``make_synthetic_data.py``, ``make_real_set.py``):
# ``<data_folder>/meta/stems/<clip id>_<part>.wav``, at the clip's own scale, ``event + background = clip``.
STEMS_FOLDER = os.path.join("meta", "stems")
STEM_PARTS = ("event", "background")


def stem_path(data_folder, clip_id, part):
    """Path of the ``part`` (``STEM_PARTS``) of clip ``clip_id`` in ``data_folder``.

    Example
    -------
    >>> stem_path("data", "1-100000-A-0", "event")
    'data/meta/stems/1-100000-A-0_event.wav'
    """
    if part not in STEM_PARTS:
        raise ValueError(f"part={part!r} is not a stem; accepted: {', '.join(STEM_PARTS)}.")
    return os.path.join(data_folder, STEMS_FOLDER, f"{clip_id}_{part}.wav")


def write_stems(folder, filename, event):
    """Writes the stems of the clip ``audio/<filename>`` (``esc50.stem_path``): its event ``[samples]`` (as it is
    in the clip) and its background, what the written clip holds besides the event, so that the two add up to
    the clip as it is read back (32-bit wavs: to within 1e-9)."""
    clip, rate = sf.read(os.path.join(folder, "audio", filename), dtype="float32")
    clip_id = os.path.splitext(filename)[0]
    os.makedirs(os.path.join(folder, STEMS_FOLDER), exist_ok=True)
    event = event.astype(clip.dtype)
    parts = {"event": event, "background": clip - event}
    for part, waveform in parts.items():
        sf.write(stem_path(folder, clip_id, part), waveform, rate, subtype="PCM_32")  # float wavs hold a timestamp


def has_stems(data_folder, clip_ids):
    """True when every clip of ``clip_ids`` has its event stem in ``data_folder``."""
    return bool(clip_ids) and all(os.path.isfile(stem_path(data_folder, clip_id, "event")) for clip_id in clip_ids)


def event_of_clip(clip, event_wav, sample_rate):
    """The event stem ``event_wav`` scaled as ``dataio_prep``'s ``sig`` of the clip, whose samples as read are
    ``clip`` ``[samples]`` (peak-normalised by the clip's peak): ``[samples]``."""
    peak = clip.abs().amax()
    event = read_clip(event_wav, sample_rate)
    return fit_length(event, clip.shape[0]) / peak if peak > torch.finfo(torch.float32).eps else torch.zeros_like(clip)


def dataio_prep(hparams):
    """Builds the train, valid and test datasets from the manifests.

    Each item has ``id``, ``sig`` (mono, ``sample_rate``, peak-normalised,
    shape ``[samples]``) and ``class_string_encoded`` (shape ``[1]``); a test
    item also ``event_sig`` where ``data_folder`` keeps the clips' stems
    (``add_event_stems``).

    Arguments
    ---------
    hparams : dict
        Needs ``train_annotation``, ``valid_annotation``, ``test_annotation``
        (manifest paths), ``sample_rate`` and ``save_folder`` (where
        ``label_encoder.txt`` is kept); ``data_folder``, where there, for the stems.

    Returns
    -------
    datasets : dict of str to DynamicItemDataset
        Keys ``train``, ``valid``, ``test``.
    label_encoder : CategoricalEncoder
    """
    sample_rate = hparams["sample_rate"]
    datasets = {
        split: DynamicItemDataset.from_json(json_path=hparams[f"{split}_annotation"])
        for split in ("train", "valid", "test")
    }
    label_encoder = build_label_encoder(
        list(datasets.values()), os.path.join(hparams["save_folder"], LABEL_ENCODER_FILE)
    )

    def clip_pipeline(wav):
        return read_clip(wav, sample_rate)

    def label_pipeline(class_string):
        return torch.LongTensor([label_encoder.encode_label(class_string)])

    for dataset in datasets.values():
        dataset.add_dynamic_item(clip_pipeline, takes="wav", provides="clip")  # read once per item, for sig and event_sig
        dataset.add_dynamic_item(peak_normalize, takes="clip", provides="sig")
        dataset.add_dynamic_item(label_pipeline, takes="class_string", provides="class_string_encoded")
        dataset.set_output_keys(["id", "sig", "class_string_encoded"])
    add_event_stems(datasets["test"], hparams.get("data_folder"), sample_rate)  # SpeechBrain's hparams may lack it
    return datasets, label_encoder


def add_event_stems(dataset, data_folder, sample_rate):
    """Adds ``event_sig`` (``event_of_clip``) to the items of ``dataset`` when ``data_folder`` keeps every clip's
    stems; returns True then."""
    if data_folder is None or not has_stems(data_folder, dataset.data_ids):
        return False

    def event_pipeline(clip_id, clip):
        return event_of_clip(clip, stem_path(data_folder, clip_id, "event"), sample_rate)

    dataset.add_dynamic_item(event_pipeline, takes=["id", "clip"], provides="event_sig")
    dataset.set_output_keys(["id", "sig", "class_string_encoded", "event_sig"])
    return True


def prepare_datasets(hparams):
    """Writes the manifests (on the main process only) and builds the datasets of a recipe.

    Arguments
    ---------
    hparams : dict
        A recipe's hyperparameters: ``data_folder``, ``audio_data_folder``,
        the three ``*_annotation`` paths and ``*_fold_nums`` lists,
        ``skip_manifest_creation``, plus what ``dataio_prep`` needs.

    Returns
    -------
    datasets : dict of str to DynamicItemDataset
    label_encoder : CategoricalEncoder
    """
    run_on_main(
        prepare_esc50,
        kwargs={
            "data_folder": hparams["data_folder"],
            "audio_data_folder": hparams["audio_data_folder"],
            "save_json_train": hparams["train_annotation"],
            "save_json_valid": hparams["valid_annotation"],
            "save_json_test": hparams["test_annotation"],
            "train_fold_nums": hparams["train_fold_nums"],
            "valid_fold_nums": hparams["valid_fold_nums"],
            "test_fold_nums": hparams["test_fold_nums"],
            "skip_manifest_creation": hparams["skip_manifest_creation"],
        },
    )
    return dataio_prep(hparams)

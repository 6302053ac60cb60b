"""ESC-50 preparation: manifests, fold validation, bad files, downloads, audio loading."""

import json
import logging
import os
import shutil
import urllib.error
import zipfile

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import lmac.data.esc50 as esc50
import lmac.recipes.esc50_prepare as esc50_prepare
from lmac.data.esc50 import dataio_prep, prepare_esc50


def run_prepare(data_folder, out_folder, **fold_lists):
    """Calls prepare_esc50 with manifests train/valid/test.json in ``out_folder``."""
    paths = {split: os.path.join(out_folder, f"{split}.json") for split in ("train", "valid", "test")}
    prepare_esc50(
        data_folder=str(data_folder),
        audio_data_folder=os.path.join(str(data_folder), "audio"),
        save_json_train=paths["train"],
        save_json_valid=paths["valid"],
        save_json_test=paths["test"],
        **fold_lists,
    )
    return paths


def load_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def expected_ids(data_folder, folds):
    metadata = pd.read_csv(os.path.join(data_folder, "meta", "esc50.csv"))
    return {name[: -len(".wav")] for name in metadata.loc[metadata["fold"].isin(folds), "filename"]}


@pytest.mark.parametrize(
    "fold_lists",
    [
        {},
        {"train_fold_nums": [2, 3, 5], "valid_fold_nums": [1], "test_fold_nums": [4]},
    ],
)
def test_manifests_hold_exactly_the_clips_of_their_folds(synthetic_data, tmp_path, fold_lists):
    data_folder = synthetic_data["esc50_folder"]
    paths = run_prepare(data_folder, tmp_path, **fold_lists)
    folds = {
        "train": fold_lists.get("train_fold_nums", [1, 2, 3]),
        "valid": fold_lists.get("valid_fold_nums", [4]),
        "test": fold_lists.get("test_fold_nums", [5]),
    }
    metadata = pd.read_csv(os.path.join(data_folder, "meta", "esc50.csv")).set_index("filename")
    for split, path in paths.items():
        manifest = load_json(path)
        assert set(manifest) == expected_ids(data_folder, folds[split])
        for clip_id, entry in manifest.items():
            row = metadata.loc[clip_id + ".wav"]
            assert entry["wav"] == os.path.abspath(os.path.join(data_folder, "audio", clip_id + ".wav"))
            assert (entry["class_string"], entry["class_id"], entry["fold"]) == (row.category, row.target, row.fold)
            assert entry["duration"] == pytest.approx(5.0)


@pytest.mark.parametrize(
    "fold_lists, message",
    [
        (
            {"train_fold_nums": [0, 1]},
            r"train_fold_nums=\[0, 1\] has folds outside 1..5; accepted values are 1, 2, 3, 4, 5",
        ),
        ({"valid_fold_nums": [6]}, r"valid_fold_nums=\[6\] has folds outside 1..5"),
        ({"test_fold_nums": []}, r"test_fold_nums is empty"),
        ({"train_fold_nums": [1, 2, 4]}, r"train_fold_nums=\[1, 2, 4\] and valid_fold_nums=\[4\] share folds \[4\]"),
        ({"train_fold_nums": [1, 1]}, r"train_fold_nums=\[1, 1\] repeats a fold"),
        ({"train_fold_nums": "1,2"}, r"train_fold_nums='1,2' must be a list of fold numbers"),
        ({"valid_fold_nums": [4.0]}, r"valid_fold_nums=\[4.0\] must be a list of fold numbers"),
    ],
)
def test_bad_fold_lists_raise_before_anything_is_written(synthetic_data, tmp_path, fold_lists, message):
    out_folder = tmp_path / "manifests"
    with pytest.raises(ValueError, match=message):
        run_prepare(synthetic_data["esc50_folder"], out_folder, **fold_lists)
    assert not out_folder.exists()


def test_unreadable_files_are_skipped_and_counted(esc50_copy, tmp_path, caplog):
    audio = esc50_copy / "audio"
    names = sorted(os.listdir(audio))
    corrupt, empty, missing, cut = names[0], names[1], names[2], names[3]
    (audio / corrupt).write_bytes(b"RIFF this is not a wav file at all")
    sf.write(audio / empty, np.zeros(0, dtype="float32"), 44100)
    (audio / missing).unlink()
    whole = (audio / cut).read_bytes()
    (audio / cut).write_bytes(whole[: len(whole) * 2 // 3])  # cut off mid-data: libsndfile reads it shorter
    assert 0 < sf.info(audio / cut).frames
    with caplog.at_level(logging.INFO, logger="lmac.data.esc50"):
        paths = run_prepare(esc50_copy, tmp_path / "manifests")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    for name in (corrupt, empty, missing):
        assert any(name in warning for warning in warnings), name
    assert any(cut in warning and "is truncated" in warning for warning in warnings)
    total = len(names)
    assert f"{total - 4} files kept, 4 skipped" in caplog.text
    kept = set().union(*(load_json(path) for path in paths.values()))
    skipped = {name[: -len(".wav")] for name in (corrupt, empty, missing, cut)}
    assert kept == {name[: -len(".wav")] for name in names} - skipped


def test_a_second_run_with_the_same_inputs_does_no_work(synthetic_data, tmp_path, monkeypatch):
    paths = run_prepare(synthetic_data["esc50_folder"], tmp_path)
    mtimes = {path: os.stat(path).st_mtime_ns for path in paths.values()}

    def must_not_scan(*args):
        raise AssertionError("preparation was redone")

    monkeypatch.setattr(esc50, "scan_clips", must_not_scan)
    run_prepare(synthetic_data["esc50_folder"], tmp_path)
    assert {path: os.stat(path).st_mtime_ns for path in paths.values()} == mtimes
    with pytest.raises(AssertionError, match="preparation was redone"):
        run_prepare(synthetic_data["esc50_folder"], tmp_path, valid_fold_nums=[5], test_fold_nums=[4])


def test_changed_audio_is_prepared_again(esc50_copy, tmp_path):
    paths = run_prepare(esc50_copy, tmp_path)
    victim = sorted(os.listdir(esc50_copy / "audio"))[0]
    (esc50_copy / "audio" / victim).write_bytes(b"broken")
    run_prepare(esc50_copy, tmp_path)
    all_ids = set().union(*(load_json(path) for path in paths.values()))
    assert victim[: -len(".wav")] not in all_ids


def test_skip_manifest_creation_needs_existing_manifests(synthetic_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="skip_manifest_creation is True but these manifests do not exist"):
        run_prepare(synthetic_data["esc50_folder"], tmp_path, skip_manifest_creation=True)


def test_fold_without_clips_is_an_error(esc50_copy, tmp_path):
    csv_path = esc50_copy / "meta" / "esc50.csv"
    metadata = pd.read_csv(csv_path)
    metadata[metadata["fold"] != 4].to_csv(csv_path, index=False)
    with pytest.raises(ValueError, match=r"valid_fold_nums=\[4\] selects no readable clip"):
        run_prepare(esc50_copy, tmp_path / "manifests")
    assert not (tmp_path / "manifests").exists()


def test_csv_without_required_columns_is_an_error(esc50_copy, tmp_path):
    csv_path = esc50_copy / "meta" / "esc50.csv"
    pd.read_csv(csv_path).drop(columns=["category"]).to_csv(csv_path, index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['category'\]"):
        run_prepare(esc50_copy, tmp_path)


def fail_download(url, dest, **kwargs):
    raise urllib.error.URLError("offline")


def test_missing_data_raises_with_the_expected_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(esc50, "download_file", fail_download)
    data_folder = tmp_path / "no_esc50_here"
    with pytest.raises(FileNotFoundError) as error:
        run_prepare(data_folder, tmp_path / "manifests")
    message = str(error.value)
    assert str(data_folder) in message and esc50.ESC50_URL in message
    assert "meta/esc50.csv" in message and "audio/*.wav" in message and "offline" in message
    assert not data_folder.exists(), "a failed download must not leave a folder behind"


def test_download_unpacks_the_official_layout(synthetic_data, tmp_path, monkeypatch):
    def serve_archive(url, dest, **kwargs):
        assert url == esc50.ESC50_URL
        with zipfile.ZipFile(dest, "w") as archive:
            for root, _, files in os.walk(synthetic_data["esc50_folder"]):
                for name in files:
                    path = os.path.join(root, name)
                    relative = os.path.relpath(path, synthetic_data["esc50_folder"])
                    archive.write(path, os.path.join("ESC-50-master", relative))

    monkeypatch.setattr(esc50, "download_file", serve_archive)
    data_folder = tmp_path / "ESC50"
    paths = run_prepare(data_folder, tmp_path / "manifests")
    assert set(load_json(paths["test"])) == expected_ids(synthetic_data["esc50_folder"], [5])
    assert (data_folder / "meta" / "esc50.csv").is_file()


def write_manifest(path, files):
    """Writes a manifest for ``{clip_id: (file, class)}`` with class ids in order of first appearance."""
    class_ids = {}
    manifest = {
        clip_id: {
            "wav": str(file),
            "class_string": class_string,
            "class_id": class_ids.setdefault(class_string, len(class_ids)),
            "fold": 1,
            "duration": sf.info(str(file)).duration,
        }
        for clip_id, (file, class_string) in files.items()
    }
    path.write_text(json.dumps(manifest))
    return str(path)


def datasets_for(tmp_path, files):
    manifest = write_manifest(tmp_path / "manifest.json", files)
    hparams = {
        "train_annotation": manifest,
        "valid_annotation": manifest,
        "test_annotation": manifest,
        "sample_rate": 16000,
        "save_folder": str(tmp_path / "save"),
    }
    return dataio_prep(hparams)


def sine(frequency, seconds, sample_rate, amplitude=0.3):
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype("float32")


@pytest.mark.parametrize(
    "sample_rate, channels, extension",
    [(44100, 1, "wav"), (8000, 1, "wav"), (44100, 2, "wav"), (22050, 1, "flac"), (48000, 2, "ogg")],
)
def test_audio_comes_out_16k_mono_peak_normalised(tmp_path, sample_rate, channels, extension):
    seconds = 1.5
    tone = sine(440.0, seconds, sample_rate)
    audio = np.stack([tone] * channels, axis=1)
    path = tmp_path / f"clip.{extension}"
    sf.write(path, audio, sample_rate)
    datasets, _ = datasets_for(tmp_path, {"clip": (path, "tone")})
    signal = datasets["train"][0]["sig"]
    assert signal.shape == (int(seconds * 16000),)
    assert signal.abs().max().item() == pytest.approx(1.0)
    reference = sine(440.0, seconds, 16000, amplitude=1.0)
    middle = slice(1600, -1600)  # away from resampling edge effects
    tolerance = 0.1 if extension == "ogg" else 0.02
    assert np.abs(signal.numpy()[middle] - reference[middle]).max() < tolerance


def test_stereo_is_the_mean_of_its_channels(tmp_path):
    tone = sine(440.0, 1.0, 16000)
    sf.write(tmp_path / "same.wav", np.stack([tone, tone], axis=1), 16000, subtype="FLOAT")
    sf.write(tmp_path / "opposite.wav", np.stack([tone, -tone], axis=1), 16000, subtype="FLOAT")
    datasets, _ = datasets_for(
        tmp_path, {"same": (tmp_path / "same.wav", "a"), "opposite": (tmp_path / "opposite.wav", "a")}
    )
    same, opposite = datasets["train"][0]["sig"], datasets["train"][1]["sig"]
    assert torch.allclose(same, torch.from_numpy(tone / np.abs(tone).max()), atol=1e-4)
    assert torch.equal(opposite, torch.zeros_like(opposite))


def test_a_clip_read_again_is_decoded_once_and_a_rewritten_file_is_read_anew(tmp_path, monkeypatch):
    from lmac.audio import io

    path = tmp_path / "clip.wav"
    sf.write(path, sine(440.0, 1.0, 44100), 44100, subtype="FLOAT")
    decodes = []
    real_read = io.read_audio_mono
    monkeypatch.setattr(io, "read_audio_mono", lambda *args: decodes.append(args) or real_read(*args))
    first = io.read_clip(str(path), 16000)
    first.zero_()  # a caller's change does not reach the kept copy
    second = io.read_clip(str(path), 16000)
    assert len(decodes) == 1
    assert torch.allclose(second, real_read(str(path), 16000)) and second.abs().max() > 0.29  # the sine, not zeros
    sf.write(path, 0.5 * sine(440.0, 2.0, 44100), 44100, subtype="FLOAT")  # new size and time: read again
    third = io.read_clip(str(path), 16000)
    assert len(decodes) == 2 and third.shape == (32000,)


def test_silent_clip_gives_zeros_not_nan(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(8000, dtype="float32"), 44100)
    datasets, _ = datasets_for(tmp_path, {"silence": (tmp_path / "silence.wav", "quiet")})
    signal = datasets["train"][0]["sig"]
    assert torch.isfinite(signal).all() and not signal.any()


def test_labels_follow_the_esc50_target_ids_and_the_encoder_is_saved(synthetic_data, tmp_path):
    paths = run_prepare(synthetic_data["esc50_folder"], tmp_path)
    hparams = {f"{split}_annotation": path for split, path in paths.items()}
    hparams.update(sample_rate=16000, save_folder=str(tmp_path / "save"))
    datasets, encoder = dataio_prep(hparams)
    manifest = load_json(paths["valid"])
    for item in datasets["valid"]:
        assert item["class_string_encoded"].tolist() == [manifest[item["id"]]["class_id"]]
    encoder_file = tmp_path / "save" / esc50.LABEL_ENCODER_FILE
    assert encoder_file.is_file()
    assert os.listdir(tmp_path / "save") == [esc50.LABEL_ENCODER_FILE]  # no partial file left
    written = encoder_file.stat().st_mtime_ns
    assert dataio_prep(hparams)[1].lab2ind == encoder.lab2ind
    assert encoder_file.stat().st_mtime_ns == written  # loaded, not written again


def test_an_existing_encoder_that_lacks_a_class_is_an_error(tmp_path):
    sf.write(tmp_path / "a.wav", sine(440.0, 0.5, 16000), 16000)
    datasets_for(tmp_path, {"a": (tmp_path / "a.wav", "bird")})
    shutil.copy(tmp_path / "a.wav", tmp_path / "b.wav")
    with pytest.raises(ValueError, match=r"does not know classes \['cat'\]"):
        datasets_for(tmp_path, {"a": (tmp_path / "a.wav", "bird"), "b": (tmp_path / "b.wav", "cat")})


def test_an_existing_encoder_indexed_by_esc50_targets_is_refused_with_what_to_do(tmp_path):
    sf.write(tmp_path / "a.wav", sine(440.0, 0.5, 16000), 16000)
    shutil.copy(tmp_path / "a.wav", tmp_path / "b.wav")
    (tmp_path / "save").mkdir()
    (tmp_path / "save" / esc50.LABEL_ENCODER_FILE).write_text(
        "'bird' => 0\n'cat' => 43\n================\n'starting_index' => 0\n"
    )
    with pytest.raises(
        ValueError, match=r"gives its 2 classes the indices \[0, 43\].*delete it to rebuild it from the data"
    ):
        datasets_for(tmp_path, {"a": (tmp_path / "a.wav", "bird"), "b": (tmp_path / "b.wav", "cat")})


def test_command_line_prepares_and_summarises(synthetic_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lmac"):
        esc50_prepare.main(["--data_folder", synthetic_data["esc50_folder"], "--output_folder", str(tmp_path)])
    assert "3 classes; train 9, valid 3, test 3 clips" in caplog.text
    assert "80000 samples at 16000 Hz" in caplog.text

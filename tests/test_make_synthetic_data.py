"""The synthetic data generator: format, determinism, event boxes, no overwriting."""

import hashlib
import json
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import SMALL_DATA

import lmac.data.synthetic as synthetic
import lmac.recipes.make_synthetic_data as make_synthetic_data
from lmac.checks import ExistingFolderError
from lmac.cli import run_script
from lmac.data.synthetic import (
    BACKGROUND_RMS,
    event_classes,
    generate,
    silence_class_classes,
    speech_like_classes,
    synthesize_clip,
    synthesize_event,
)


def folder_digest(folder):
    """SHA-1 of every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha1()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as file:
                digest.update(file.read())
    return digest.hexdigest()


def test_esc50_folder_has_the_official_format(synthetic_data):
    folder = synthetic_data["esc50_folder"]
    metadata = pd.read_csv(os.path.join(folder, "meta", "esc50.csv"))
    assert list(metadata.columns) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    n_classes, per_class = SMALL_DATA["n_classes"], SMALL_DATA["clips_per_class"]
    assert len(metadata) == n_classes * per_class
    assert sorted(os.listdir(os.path.join(folder, "audio"))) == sorted(metadata["filename"])
    counts = metadata.groupby(["fold", "target"]).size()
    assert len(counts) == 5 * n_classes and set(counts) == {per_class // 5}
    assert metadata.groupby("target")["category"].nunique().eq(1).all()
    for row in metadata.itertuples():
        assert row.filename == f"{row.fold}-{row.src_file}-{row.take}-{row.target}.wav"
        info = sf.info(os.path.join(folder, "audio", row.filename))
        assert (info.samplerate, info.channels, info.frames) == (44100, 1, 220500)
    events = pd.read_csv(os.path.join(folder, "meta", "events.csv"))
    assert list(events.columns) == ["filename", "onset_s", "offset_s", "fmin_hz", "fmax_hz"]
    assert list(events["filename"]) == list(metadata["filename"])
    assert ((0 <= events.onset_s) & (events.onset_s < events.offset_s) & (events.offset_s <= 5)).all()
    assert ((0 <= events.fmin_hz) & (events.fmin_hz < events.fmax_hz) & (events.fmax_hz <= 8000)).all()


def test_wham_folder_has_the_official_format(synthetic_data):
    folder = synthetic_data["wham_folder"]
    for split, count in zip(("tr", "cv", "tt"), SMALL_DATA["noise_files"]):
        names = sorted(os.listdir(os.path.join(folder, split)))
        assert len(names) == count
        for name in names:
            info = sf.info(os.path.join(folder, split, name))
            assert (info.samplerate, info.channels) == (16000, 2)
            assert 3.0 <= info.duration <= 8.0


@pytest.mark.parametrize("kind", synthetic.NOISE_KINDS)
def test_noises_are_non_stationary(kind):
    noise = synthetic.synthesize_noise(kind, np.random.default_rng(0), 16000 * 4)
    frame_energy = (noise.reshape(-1, 800) ** 2).mean(axis=1)  # 50 ms frames
    assert np.isfinite(noise).all()
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0)
    assert frame_energy.std() / frame_energy.mean() > 0.1


def test_generation_is_deterministic_for_a_seed(synthetic_data, tmp_path):
    again = generate(str(tmp_path / "again"), **SMALL_DATA)
    original_root = os.path.dirname(synthetic_data["esc50_folder"])
    assert folder_digest(os.path.dirname(again["esc50_folder"])) == folder_digest(original_root)
    other = generate(str(tmp_path / "other"), **{**SMALL_DATA, "seed": SMALL_DATA["seed"] + 1})
    assert folder_digest(other["esc50_folder"]) != folder_digest(synthetic_data["esc50_folder"])


def event_energy_in_box(event, sample_rate):
    """Share of the event's STFT energy (23 ms Hann window) inside its time-frequency box."""
    n_fft, hop = 1024, 256
    power = (
        torch.stft(
            torch.from_numpy(event.waveform),
            n_fft,
            hop,
            window=torch.hann_window(n_fft, dtype=torch.float64),
            return_complex=True,
        ).abs()
        ** 2
    )  # [freq, frames]
    frequencies = torch.arange(power.shape[0]) * sample_rate / n_fft
    times = torch.arange(power.shape[1]) * hop / sample_rate
    in_band = (frequencies >= event.fmin_hz) & (frequencies <= event.fmax_hz)
    in_span = (times >= event.onset_s) & (times <= event.offset_s)
    return (power[in_band][:, in_span].sum() / power.sum()).item()


@pytest.mark.parametrize("event_class", event_classes(50), ids=lambda event_class: event_class.name)
def test_event_boxes_hold_most_of_the_event_energy(event_class):
    for seed in range(3):
        event = synthesize_event(event_class, np.random.default_rng(seed))
        assert event_energy_in_box(event, synthetic.ESC50_SAMPLE_RATE) > 0.95
        box_share = (event.offset_s - event.onset_s) / 5.0 * (event.fmax_hz - event.fmin_hz) / 8000.0
        assert box_share < 0.35, "a box covering most of the spectrogram would make localisation meaningless"


def test_all_fifty_classes_are_distinct():
    classes = event_classes(50)
    assert len({c.name for c in classes}) == 50
    assert len({(c.family, c.band_hz) for c in classes}) == 50
    with pytest.raises(ValueError, match="n_classes=51; accepted values are 2..50"):
        event_classes(51)


def test_existing_folders_are_never_overwritten(synthetic_data, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not empty and was not made by this script"):
        generate(str(foreign), **SMALL_DATA)
    assert os.listdir(foreign) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep me"
    root = os.path.dirname(synthetic_data["esc50_folder"])
    before = folder_digest(root)
    with pytest.raises(ExistingFolderError, match=r"made with other settings \(n_classes 3, now 4\); choose another"):
        generate(root, **{**SMALL_DATA, "n_classes": 4})
    assert generate(root, **SMALL_DATA) == synthetic_data  # same settings: reused as it is
    assert folder_digest(root) == before


def test_too_few_clips_per_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match="clips_per_class=4; use at least 5"):
        generate(str(tmp_path / "data"), clips_per_class=4)
    assert not (tmp_path / "data").exists()


def test_a_folder_made_before_the_background_setting_is_reused_at_the_old_background(tmp_path):
    root = str(tmp_path / "data")
    generate(root, **SMALL_DATA)
    record = os.path.join(root, "synthetic_data.json")
    with open(record, encoding="utf-8") as file:
        settings = json.load(file)
    assert settings.pop("background_rms") == BACKGROUND_RMS
    with open(record, "w", encoding="utf-8") as file:
        json.dump(settings, file)  # as written before the setting existed
    assert generate(root, **SMALL_DATA)["esc50_folder"] == os.path.join(root, "ESC50")
    with pytest.raises(FileExistsError, match=r"made with other settings \(background_rms 0.005, now 0.8\)"):
        generate(root, **SMALL_DATA, background_rms=0.8)


def test_a_louder_background_keeps_the_events_and_lowers_their_snr():
    event_class = event_classes(2)[0]
    quiet, quiet_event = synthesize_clip(event_class, np.random.default_rng(5))
    loud, loud_event = synthesize_clip(event_class, np.random.default_rng(5), background_rms=0.8)
    assert (quiet_event.onset_s, quiet_event.fmin_hz) == (loud_event.onset_s, loud_event.fmin_hz)
    outside = np.ones(quiet.size, dtype=bool)
    outside[int(quiet_event.onset_s * 44100) : int(quiet_event.offset_s * 44100)] = False

    def snr(clip):
        return np.mean(clip[~outside] ** 2) / np.mean(clip[outside] ** 2)

    assert snr(quiet) > 100 * snr(loud)


@pytest.mark.parametrize(
    "event_class", [*silence_class_classes(2)[:1], *speech_like_classes(5)], ids=lambda event_class: event_class.name
)
def test_the_scenario_classes_events_lie_in_their_boxes(event_class):
    for seed in range(3):
        event = synthesize_event(event_class, np.random.default_rng(seed))
        assert event_energy_in_box(event, synthetic.ESC50_SAMPLE_RATE) > 0.9


def test_the_silence_class_is_a_short_tick_in_near_silence_and_the_others_keep_their_background():
    tick_class, other_class = silence_class_classes(2)
    tick, tick_event = synthesize_clip(tick_class, np.random.default_rng(1), background_rms=0.3)
    other, other_event = synthesize_clip(other_class, np.random.default_rng(1), background_rms=0.3)
    assert tick_event.offset_s - tick_event.onset_s <= 0.08
    tick_background = np.sqrt(np.mean(tick[: int(tick_event.onset_s * 44100)] ** 2))
    other_background = np.sqrt(np.mean(other[: int(other_event.onset_s * 44100)] ** 2))
    assert tick_background == pytest.approx(0.003, rel=0.1)  # 1% of the others' 0.3 (a clip under 1 is not rescaled)
    assert other_background > 50 * tick_background  # the others, peak-normalised, keep a loud background


def test_speech_like_syllables_pause_between_bursts():
    event = synthesize_event(speech_like_classes(2)[1], np.random.default_rng(4))
    span = event.waveform[int(event.onset_s * 44100) : int(event.offset_s * 44100)]
    frame_energy = np.square(span[: span.size // 441 * 441].reshape(-1, 441)).mean(axis=1)  # 10 ms frames
    assert 0.2 < np.mean(frame_energy < 0.01 * frame_energy.max()) < 0.7
    with pytest.raises(ValueError, match="n_classes=6; the speech_like scenario has 2..5 classes"):
        speech_like_classes(6)
    with pytest.raises(ValueError, match="scenario='birds'; accepted values are events, silence_class, speech_like"):
        generate("unused", scenario="birds")


def test_each_clip_keeps_its_event_and_background_and_they_add_up_to_it(synthetic_data):
    folder = synthetic_data["esc50_folder"]
    metadata = pd.read_csv(os.path.join(folder, "meta", "esc50.csv"))
    events = pd.read_csv(os.path.join(folder, "meta", "events.csv")).set_index("filename")
    for filename in metadata["filename"][:4]:
        clip_id = filename.removesuffix(".wav")
        clip, rate = sf.read(os.path.join(folder, "audio", filename), dtype="float32")
        event, event_rate = sf.read(os.path.join(folder, "meta", "stems", f"{clip_id}_event.wav"), dtype="float32")
        background, _ = sf.read(os.path.join(folder, "meta", "stems", f"{clip_id}_background.wav"), dtype="float32")
        assert event_rate == rate and event.shape == clip.shape
        np.testing.assert_allclose(event + background, clip, atol=1e-7)
        # The event is silent outside its span in events.csv, and loud inside it.
        onset, offset = (int(events.loc[filename, key] * rate) for key in ("onset_s", "offset_s"))
        assert (
            np.abs(event[: max(onset - 10, 0)]).max(initial=0.0) == 0
            and np.abs(event[offset + 10 :]).max(initial=0.0) == 0
        )
        assert np.abs(event[onset:offset]).max() > 0.1


def test_a_folder_made_before_the_stems_gets_them_when_reused(tmp_path):
    settings = {"n_classes": 2, "clips_per_class": 5, "noise_files": (1, 1, 1), "seed": 4}
    paths = generate(str(tmp_path / "data"), **settings)
    stems = os.path.join(paths["esc50_folder"], "meta", "stems")
    first = sorted(os.listdir(stems))
    digests = {name: hashlib.sha1(open(os.path.join(stems, name), "rb").read()).hexdigest() for name in first}
    shutil.rmtree(stems)
    generate(str(tmp_path / "data"), **settings)
    assert sorted(os.listdir(stems)) == first and len(first) == 20
    assert {name: hashlib.sha1(open(os.path.join(stems, name), "rb").read()).hexdigest() for name in first} == digests


def test_the_script_stops_in_one_line_before_a_folder_made_with_other_settings(synthetic_data, monkeypatch, capsys):
    root = os.path.dirname(synthetic_data["esc50_folder"])
    before = folder_digest(root)
    monkeypatch.setattr(sys, "argv", ["make_synthetic_data.py"])
    flags = ["--output_folder", root, "--n_classes", "4", "--clips_per_class", "5", "--noise_files", "4", "2", "2"]
    with pytest.raises(SystemExit) as stopped:
        run_script(make_synthetic_data.main, [*flags, "--seed", "7"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"make_synthetic_data.py: error: {root} holds synthetic data made with other settings (n_classes 3, now 4); "
        "choose another folder for the data or delete that folder first.\n"
    )
    assert folder_digest(root) == before

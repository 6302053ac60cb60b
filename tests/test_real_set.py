"""A set from recordings (``make_real_set.py``): ESC-50 format, events where events.csv says, stems that add up."""

import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lmac.data.esc50 import prepare_esc50
from lmac.data.real_set import RealSetSettings, write_real_set
from lmac.recipes import make_real_set

RATE = 22050


def write_recordings(folder, frequencies, count):
    """``count`` decaying tones per class (one class per frequency) and two noise backgrounds."""
    rng = np.random.default_rng(0)
    for name, frequency in frequencies.items():
        os.makedirs(folder / "events" / name)
        for index in range(count):
            time = np.arange(int(0.3 * RATE)) / RATE
            tone = np.sin(2 * np.pi * frequency * time) * np.exp(-time * 10)
            padded = np.concatenate([np.zeros(RATE // 10), tone, np.zeros(RATE // 10)])  # silence to trim
            sf.write(folder / "events" / name / f"take{index}.flac", padded * 0.5, RATE)
    os.makedirs(folder / "backgrounds")
    for index in range(2):
        sf.write(folder / "backgrounds" / f"room{index}.wav", rng.normal(size=RATE * 2) * 0.05, RATE)


def test_a_set_of_recordings_has_the_esc50_layout_and_its_stems(tmp_path):
    write_recordings(tmp_path, {"low": 300.0, "high": 3000.0}, count=6)
    settings = RealSetSettings(sample_rate=RATE, clips_per_class=6, seed=1)
    out = tmp_path / "set"
    metadata = write_real_set(str(tmp_path / "events"), str(tmp_path / "backgrounds"), str(out), settings)
    assert len(metadata) == 12 and sorted(metadata["category"].unique()) == ["high", "low"]
    assert sorted(metadata["fold"].value_counts().to_dict().items()) == [(1, 4), (2, 2), (3, 2), (4, 2), (5, 2)]
    events = pd.read_csv(out / "meta" / "events.csv").set_index("filename")
    for row in metadata.itertuples():
        clip, rate = sf.read(out / "audio" / row.filename, dtype="float32")
        clip_id = row.filename.removesuffix(".wav")
        event, _ = sf.read(out / "meta" / "stems" / f"{clip_id}_event.wav", dtype="float32")
        background, _ = sf.read(out / "meta" / "stems" / f"{clip_id}_background.wav", dtype="float32")
        assert rate == RATE and clip.shape == (5 * RATE,)
        np.testing.assert_allclose(event + background, clip, atol=1e-7)
        onset, offset = (int(round(events.loc[row.filename, key] * RATE)) for key in ("onset_s", "offset_s"))
        assert np.abs(event[: onset - 5]).max() == 0 and np.abs(event[offset + 5 :]).max() == 0  # events.csv: 0.1 ms
        assert 0.25 <= (offset - onset) / RATE <= 0.35  # the 0.3 s tone, its silences trimmed
        frequency = 300.0 if row.category == "low" else 3000.0
        assert events.loc[row.filename, "fmin_hz"] <= frequency <= events.loc[row.filename, "fmax_hz"]
        ratio_db = 10 * np.log10(np.sum(event[onset:offset] ** 2) / np.sum(background[onset:offset] ** 2))
        assert 0.0 - 0.2 <= ratio_db <= 10.0 + 0.2
    # The recipe's own preparation reads it as ESC-50.
    manifests = [str(tmp_path / f"{split}.json") for split in ("train", "valid", "test")]
    prepare_esc50(str(out), str(out / "audio"), *manifests)
    assert os.path.getsize(manifests[2]) > 0


def test_bad_folders_are_named_and_nothing_is_overwritten(tmp_path):
    write_recordings(tmp_path, {"only": 500.0}, count=6)
    with pytest.raises(FileNotFoundError, match="needs at least two class sub-folders"):
        make_real_set.main(
            [
                "--events_folder",
                str(tmp_path / "events"),
                "--backgrounds_folder",
                str(tmp_path / "backgrounds"),
                "--output_folder",
                str(tmp_path / "set"),
            ]
        )
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="is not empty"):
        write_real_set(str(tmp_path / "events"), str(tmp_path / "backgrounds"), str(tmp_path / "taken"))
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"

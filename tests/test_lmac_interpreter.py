"""LMACInterpreter on a toy classifier with a known answer: the timeline, and files interpreted piece by piece."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from lmac.audio.io import peak_normalize, read_audio_mono
from lmac.audio.stream import ResampledAudio
from lmac.features import DeviceFilterbank, DeviceISTFT, DeviceSTFT, LogMelInput, spectral_features
from lmac.inference import LMACInterpreter, output_names, stitch_masks
from lmac.masking import inverted_interpretation
from lmac.methods import MaskMethod

HOP_MS, WIN_MS = 11.6099, 23.2199


class LowOrHigh(torch.nn.Module):
    """Logits ``[low, high]``: the mean log-mel energy of the lower and of the upper half of the bands."""

    def forward(self, mel_input):
        half = mel_input.shape[2] // 2
        logits = torch.stack([mel_input[:, :, :half].mean(dim=(1, 2)), mel_input[:, :, half:].mean(dim=(1, 2))], dim=1)
        return 20 * logits, ()


class WholeSpectrogram(MaskMethod):
    name, title = "ones", "All ones"

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls()

    def mask(self, features, logits, feature_maps):
        return torch.ones_like(features.log_mag)


@pytest.fixture
def toy_interpreter():
    settings = {"sample_rate": 16000, "n_fft": 1024, "hop_length": HOP_MS, "win_length": WIN_MS}
    modules = {
        "compute_stft": DeviceSTFT(**settings),
        "compute_istft": DeviceISTFT(**settings),
        "classifier_input": LogMelInput(DeviceFilterbank(n_mels=80, n_fft=1024, sample_rate=16000, log_mel=False)),
        "classifier": LowOrHigh(),
        "psi": torch.nn.Identity(),
    }
    hparams = {"sample_rate": 16000, "signal_length_s": 5, "batch_size": 4, "n_classes": 2}
    return LMACInterpreter(
        modules=modules,
        hparams=hparams,
        run_opts={"device": "cpu"},
        mask_method=WholeSpectrogram(),
        class_names=["low", "high"],
    )


def tone(seconds, frequency, sample_rate=16000):
    return 0.5 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * sample_rate)) / sample_rate).astype("float32")


def test_the_timeline_names_each_events_class_in_its_own_windows(toy_interpreter, tmp_path):
    path = tmp_path / "low_then_high.wav"
    sf.write(path, np.concatenate([tone(10.0, 200.0), tone(10.0, 6000.0)]), 16000)  # 20 s
    result = toy_interpreter.interpret_file(str(path), savedir=str(tmp_path / "out"))
    timeline = result.timeline
    hop_s = 80000 // 2 // 186 * 186 / 16000  # half a clip, a whole number of STFT hops: 2.4994 s
    bounds = [bound for entry in timeline[:3] for bound in (entry["start_s"], entry["end_s"])]
    assert bounds == pytest.approx([0.0, 5.0, hop_s, hop_s + 5.0, 2 * hop_s, 2 * hop_s + 5.0])
    assert timeline[-1]["end_s"] == pytest.approx(20.0)
    for entry in timeline:
        if entry["end_s"] <= 10.0:
            assert entry["class"] == "low", entry
        if entry["start_s"] >= 10.0:
            assert entry["class"] == "high", entry
    assert json.loads((tmp_path / "out" / "low_then_high_timeline.json").read_text()) == timeline
    csv_lines = (tmp_path / "out" / "low_then_high_timeline.csv").read_text().splitlines()
    assert csv_lines[0] == "start_s,end_s,class,probability" and len(csv_lines) == len(timeline) + 1
    assert csv_lines[1].startswith("0.0,5.0,low,")


def test_an_all_ones_mask_gives_the_file_back(toy_interpreter, tmp_path):
    signal = np.concatenate([tone(3.0, 300.0), tone(4.0, 2000.0)])
    sf.write(tmp_path / "clip.wav", signal, 16000, subtype="FLOAT")
    result = toy_interpreter.interpret_file(str(tmp_path / "clip.wav"))
    assert result.interpretation.shape == (1, signal.shape[0]) and result.mask.shape[:2] == (
        1,
        signal.shape[0] // 186 + 1,
    )
    expected = torch.from_numpy(signal / np.abs(signal).max())
    assert torch.allclose(result.interpretation[0, 400:-400], expected[400:-400], atol=1e-3)


class LoudnessShare(MaskMethod):
    """Each cell's log-magnitude over the window's largest: a mask that differs from window to window."""

    name, title = "loudness", "Loudness share"

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls()

    def mask(self, features, logits, feature_maps):
        return features.log_mag / features.log_mag.amax(dim=(1, 2), keepdim=True)


def whole_file_interpretation(interpreter, path):
    """The file interpreted in one go: every window masked, the masks cross-faded, one inverse STFT."""
    waveform = peak_normalize(read_audio_mono(path, 16000))
    window, hop_frames, hop = 80000, 80000 // 2 // 186, 186
    count = 1 + max(0, -(-(waveform.shape[0] - window) // (hop_frames * hop)))
    padded = torch.nn.functional.pad(waveform, (0, window + (count - 1) * hop_frames * hop - waveform.shape[0]))
    _, masks, probabilities = interpreter.analyse_batch(padded.unfold(0, window, hop_frames * hop))
    features = spectral_features(padded[None], interpreter.mods.compute_stft, interpreter.mods.classifier_input)
    mask = stitch_masks(masks, hop_frames, features.log_mag.shape[1])
    interpretation = inverted_interpretation(mask[None], features, padded.shape[0], interpreter.mods.compute_istft)[0]
    return interpretation[: waveform.shape[0]], mask[: waveform.shape[0] // hop + 1], probabilities


@pytest.mark.parametrize("rate, channels, extension", [(44100, 2, "flac"), (8000, 1, "ogg"), (16000, 1, "wav")])
def test_a_file_interpreted_piece_by_piece_equals_the_whole_file_at_once(
    toy_interpreter, tmp_path, rate, channels, extension
):
    generator = np.random.default_rng(1)
    seconds = 23.3
    times = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 300 * times) * (times < 9) + 0.2 * np.sin(2 * np.pi * 1500 * times) * (times > 6)
    signal = signal[:, None] + 0.05 * generator.standard_normal((times.shape[0], channels))
    path = str(tmp_path / f"mixed.{extension}")
    sf.write(path, signal.astype("float32"), rate)
    toy_interpreter.mask_method = LoudnessShare()
    interpretation, mask, window_probabilities = whole_file_interpretation(toy_interpreter, path)
    toy_interpreter.piece_windows = 1  # pieces of one window hop, 2.4994 s: 10 for 23.3 s
    assert toy_interpreter.piece_count(interpretation.shape[0]) == 10
    result = toy_interpreter.interpret_file(path)
    assert result.interpretation.shape == (1, interpretation.shape[0]) and result.mask.shape == (1, *mask.shape)
    torch.testing.assert_close(result.mask[0], mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.interpretation[0], interpretation, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.probabilities[0], window_probabilities.mean(dim=0), atol=1e-6, rtol=0)
    assert [entry["probability"] for entry in result.timeline] == pytest.approx(
        window_probabilities.max(dim=1).values.tolist()
    )


def test_without_kept_tensors_the_files_hold_the_interpretation(toy_interpreter, tmp_path):
    sf.write(tmp_path / "clip.wav", np.concatenate([tone(6.0, 300.0), tone(7.0, 3000.0)]), 16000, subtype="FLOAT")
    toy_interpreter.mask_method = LoudnessShare()
    toy_interpreter.piece_windows = 2
    kept = toy_interpreter.interpret_file(str(tmp_path / "clip.wav"))
    streamed = toy_interpreter.interpret_file(
        str(tmp_path / "clip.wav"), savedir=str(tmp_path / "out"), keep_tensors=False
    )
    assert streamed.interpretation is None and streamed.mask is None
    assert torch.equal(streamed.probabilities, kept.probabilities) and streamed.timeline == kept.timeline
    written, rate = sf.read(streamed.outputs["interpretation"], dtype="float32")
    assert rate == 16000 and written.shape == (13 * 16000,)
    assert np.abs(written - kept.interpretation[0].numpy()).max() < 2 / 2**15  # 16-bit PCM
    assert sorted(os.path.basename(path) for path in streamed.outputs.values()) == [
        "clip.json",
        "clip_input.wav",
        "clip_interpretation.wav",
        "clip_spectrogram.png",
        "clip_timeline.csv",
        "clip_timeline.json",
    ]
    assert all(os.path.dirname(path) == str(tmp_path / "out") for path in streamed.outputs.values())


def test_spans_of_a_resampled_file_equal_the_whole_file_read_at_once(tmp_path):
    generator = np.random.default_rng(2)
    for rate, channels, extension in [(44100, 2, "flac"), (8000, 1, "ogg"), (48000, 6, "wav")]:
        path = str(tmp_path / f"noise{rate}.{extension}")
        sf.write(path, (0.2 * generator.standard_normal((rate * 7 + 123, channels))).astype("float32"), rate)
        whole = read_audio_mono(path, 16000)
        with ResampledAudio(path, 16000) as audio:
            assert audio.num_samples == whole.shape[0]
            assert audio.peak() == pytest.approx(whole.abs().max().item(), abs=1e-6)
            for start, stop in [
                (0, 1000),
                (-50, 300),
                (12345, 40000),
                (whole.shape[0] - 500, whole.shape[0] + 300),
                (77, 78),
            ]:
                expected = torch.zeros(stop - start)
                inside = slice(max(0, start), min(whole.shape[0], stop))
                expected[inside.start - start : inside.stop - start] = whole[inside]
                torch.testing.assert_close(audio.read(start, stop), expected, atol=1e-6, rtol=0)


def test_output_names_depend_on_the_files_not_on_earlier_calls(toy_interpreter, tmp_path):
    path = tmp_path / "in" / "5-100004-A-0.wav"
    path.parent.mkdir()
    sf.write(path, tone(1.0, 200.0), 16000)
    for run in ("run1", "run2"):
        result = toy_interpreter.interpret_file(str(path), savedir=str(tmp_path / run))
        assert result.outputs["interpretation"] == str(tmp_path / run / "5-100004-A-0_interpretation.wav")
    twins = [tmp_path / "a" / "dog.wav", tmp_path / "b" / "dog.wav", tmp_path / "a" / "dog.flac"]
    for twin, frequency in zip(twins, (200.0, 6000.0, 300.0)):
        twin.parent.mkdir(exist_ok=True)
        sf.write(twin, tone(1.0, frequency), 16000)
    names = output_names([str(twin) for twin in twins])
    assert names == ["a_dog_wav", "b_dog_wav", "a_dog_flac"]
    for twin, name in zip(twins, names):
        toy_interpreter.interpret_file(str(twin), savedir=str(tmp_path / "twins"), name=name)
    labels = [json.loads((tmp_path / "twins" / f"{name}.json").read_text())["top5"][0]["class"] for name in names]
    assert labels == ["low", "high", "low"]  # each file's own outputs, none overwritten

"""WHAM! noise: folder checks, reproducible excerpts, worker loading, 0 dB mixing."""

import gc
import logging
import multiprocessing
import os
import urllib.error
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

import lmac.data.esc50 as esc50
import lmac.data.wham as wham
import lmac.recipes.wham_prepare as wham_prepare
from lmac.data.wham import NoiseFile, WhamNoise, WhamNoiseStream, combine_batches, prepare_wham


def fail_download(url, dest, **kwargs):
    raise urllib.error.URLError("offline")


def parts_of_mixture(mixture, clean, noise):
    """Least-squares weights ``(a, b)`` per row with ``mixture = a * clean + b * noise``. Shapes ``[batch, samples]``."""
    basis = torch.stack([clean, noise], dim=2).double()  # [batch, samples, 2]
    return torch.linalg.lstsq(basis, mixture.double().unsqueeze(2)).solution.squeeze(2)  # [batch, 2]


def test_combine_batches_mixes_at_equal_energy_with_unit_peak():
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(4, 1000, generator=generator) * torch.tensor([[0.1], [1.0], [5.0], [0.01]])
    noise = torch.randn(4, 1000, generator=generator) * torch.tensor([[3.0], [0.2], [1.0], [1.0]])
    mixture = combine_batches(clean, noise)
    assert mixture.shape == clean.shape
    assert torch.allclose(mixture.abs().amax(dim=1), torch.ones(4))
    weights = parts_of_mixture(mixture, clean, noise)
    clean_energy = (weights[:, 0] * clean.double().norm(dim=1)) ** 2
    noise_energy = (weights[:, 1] * noise.double().norm(dim=1)) ** 2
    assert torch.allclose(clean_energy, noise_energy, rtol=1e-4)


def test_combine_batches_leaves_inputs_alone_and_handles_silence():
    clean = torch.zeros(2, 100)
    clean[1] = torch.linspace(-1, 1, 100)
    noise = torch.ones(2, 100) * 0.5
    clean_before, noise_before = clean.clone(), noise.clone()
    mixture = combine_batches(clean, noise)
    assert torch.isfinite(mixture).all()
    assert torch.equal(mixture[0], torch.zeros(100))  # a silent clean clip stays silent: the SNR scales the noise to it
    assert torch.equal(clean, clean_before) and torch.equal(noise, noise_before)
    assert torch.equal(combine_batches(torch.zeros(1, 8), torch.zeros(1, 8)), torch.zeros(1, 8))


@pytest.mark.parametrize("clean_weight, noise_weight", [(1.0, 1.0), (0.8, 0.2), (1.0, 0.5)])
def test_combine_batches_weighs_unit_energy_clips_and_noise_as_speechbrain_s_add_noise_does(clean_weight, noise_weight):
    generator = torch.Generator().manual_seed(1)
    clean = torch.randn(3, 500, generator=generator) * torch.tensor([[0.1], [2.0], [1.0]])
    noise = torch.randn(3, 500, generator=generator) * torch.tensor([[1.0], [0.3], [4.0]])
    mixture = combine_batches(clean, noise, clean_weight, noise_weight)
    expected = clean_weight * clean / clean.norm(dim=1, keepdim=True) + noise_weight * noise / noise.norm(
        dim=1, keepdim=True
    )
    torch.testing.assert_close(mixture, expected / expected.abs().amax(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_combine_batches_names_both_shapes_when_they_differ():
    with pytest.raises(ValueError, match=r"got clean \(2, 100\) and noise \(2, 90\)"):
        combine_batches(torch.zeros(2, 100), torch.zeros(2, 90))


def write_ramp(path, frames, sample_rate, channels=1):
    """A file whose sample ``k`` is ``k / frames`` in every channel, so excerpts reveal their offset."""
    ramp = (np.arange(frames) / frames).astype("float32")
    sf.write(path, np.stack([ramp] * channels, axis=1), sample_rate, subtype="FLOAT")
    return NoiseFile(str(path), frames, sample_rate)


def test_excerpts_are_contiguous_mono_and_reproducible(tmp_path):
    long_file = write_ramp(tmp_path / "long.wav", 16000 * 3, 16000, channels=2)
    noise = WhamNoise([long_file], sample_rate=16000, signal_length_s=1.0, seed=3)
    excerpts = [noise[index] for index in range(6)]
    for excerpt in excerpts:
        assert excerpt.shape == (16000,)
        steps = excerpt[1:] - excerpt[:-1]
        assert torch.allclose(steps, torch.full_like(steps, 1 / long_file.frames), atol=1e-6)
    offsets = {round(excerpt[0].item() * long_file.frames) for excerpt in excerpts}
    assert len(offsets) > 1, "excerpts should start at random places"
    again = WhamNoise([long_file], sample_rate=16000, signal_length_s=1.0, seed=3)
    assert all(torch.equal(again[index], excerpts[index]) for index in range(6))
    other_seed = WhamNoise([long_file], sample_rate=16000, signal_length_s=1.0, seed=4)
    assert not all(torch.equal(other_seed[index], excerpts[index]) for index in range(6))


def test_short_noise_is_resampled_and_zero_padded(tmp_path):
    short_file = write_ramp(tmp_path / "short.wav", 4000, 8000)  # 0.5 s at 8 kHz
    excerpt = WhamNoise([short_file], sample_rate=16000, signal_length_s=2.0, seed=0)[0]
    assert excerpt.shape == (32000,)
    assert excerpt[:7000].abs().sum() > 0
    assert not excerpt[8100:].any()


def test_stream_is_identical_with_and_without_workers(synthetic_data):
    noise = WhamNoise(prepare_wham(synthetic_data["wham_folder"]), sample_rate=16000, signal_length_s=0.5, seed=11)
    in_process = WhamNoiseStream(noise, batch_size=3, num_workers=0)
    in_workers = WhamNoiseStream(noise, batch_size=3, num_workers=2)
    for batch_size in (2, 5, 1, 4):
        batch = in_process.next_batch(batch_size)
        assert batch.shape == (batch_size, 8000)
        assert torch.equal(batch, in_workers.next_batch(batch_size))
    drawn = WhamNoiseStream(noise, batch_size=4, num_workers=0).next_batch(12)
    assert torch.equal(drawn, torch.stack([noise[index] for index in range(12)]))


def test_each_clip_has_its_own_noise_whatever_the_batch_and_the_process(synthetic_data, monkeypatch):
    hparams = {
        "add_wham_noise": True,
        "wham_folder": synthetic_data["wham_folder"],
        "sample_rate": 16000,
        "signal_length_s": 0.5,
        "seed": 3,
        "batch_size": 2,
        "noise_num_workers": 0,
    }
    clean = torch.randn(3, 8000)
    ids = ["1-100-A-0", "2-200-A-1", "3-300-A-2"]
    streams = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        streams[rank] = wham.make_noise_stream(hparams)
    first = streams["0"].mix_own(clean, ids)
    # Again, on the other process, and in another batch order: the same mixture for each clip.
    again = streams["1"].mix_own(clean.flip(0), ids[::-1])
    assert torch.equal(again.wavs.flip(0), first.wavs)
    # The clips' mixtures differ from one another, and from the stream's draws, which differ between processes.
    assert not torch.allclose(first.wavs[0], streams["0"].mix_own(clean[:1], ids[1:2]).wavs[0])
    drawn = {rank: stream.mix(clean).wavs for rank, stream in streams.items()}
    assert not torch.allclose(drawn["0"], drawn["1"]) and not torch.allclose(drawn["0"], first.wavs)


def test_a_forked_process_leaves_the_noise_workers_to_their_parent(synthetic_data, tmp_path):
    noise = WhamNoise(prepare_wham(synthetic_data["wham_folder"]), sample_rate=16000, signal_length_s=0.5, seed=11)
    streams = [WhamNoiseStream(noise, batch_size=2, num_workers=1)]
    streams[0].next_batch(2)  # its worker runs
    child_stderr = tmp_path / "child_stderr.txt"

    def drop_the_stream():  # as a DataLoader worker forked later may, when the stream has become garbage
        os.dup2(os.open(child_stderr, os.O_WRONLY | os.O_CREAT), 2)
        streams.clear()
        gc.collect()

    child = multiprocessing.get_context("fork").Process(target=drop_the_stream)
    child.start()
    child.join()
    assert child.exitcode == 0
    assert "can only test a child process" not in child_stderr.read_text()
    assert streams[0].next_batch(2).shape == (2, 8000)  # the parent's stream still draws


def test_prepare_wham_lists_readable_training_files(synthetic_data):
    noise_files = prepare_wham(synthetic_data["wham_folder"])
    train_folder = os.path.join(synthetic_data["wham_folder"], "tr")
    assert [os.path.basename(f.path) for f in noise_files] == sorted(os.listdir(train_folder))
    assert all(f.sample_rate == 16000 and f.frames > 0 for f in noise_files)


def test_prepare_wham_skips_a_corrupt_file(tmp_path, caplog):
    (tmp_path / "tr").mkdir()
    write_ramp(tmp_path / "tr" / "good.wav", 1600, 16000)
    (tmp_path / "tr" / "bad.wav").write_bytes(b"not audio")
    with caplog.at_level(logging.WARNING, logger="lmac.data.wham"):
        noise_files = prepare_wham(str(tmp_path))
    assert [os.path.basename(f.path) for f in noise_files] == ["good.wav"]
    assert "bad.wav" in caplog.text


@pytest.mark.parametrize("make_folder", [False, True], ids=["missing", "empty"])
def test_missing_or_empty_folder_raises_after_the_download_fails(tmp_path, monkeypatch, make_folder):
    monkeypatch.setattr(esc50, "download_file", fail_download)
    wham_folder = tmp_path / "wham_noise"
    if make_folder:
        wham_folder.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        prepare_wham(str(wham_folder))
    message = str(error.value)
    assert str(wham_folder) in message and wham.WHAM_URL in message and "offline" in message
    assert "<wham_folder>/tr/*.wav" in message and "--add_wham_noise False" in message
    assert wham_folder.exists() == make_folder
    if make_folder:
        assert os.listdir(wham_folder) == []


def test_download_unpacks_the_official_layout(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    write_ramp(source / "n.wav", 1600, 16000)

    def serve_archive(url, dest, **kwargs):
        assert url == wham.WHAM_URL
        with zipfile.ZipFile(dest, "w") as archive:
            for split in ("tr", "cv", "tt"):
                archive.write(source / "n.wav", f"wham_noise/{split}/{split}_noise.wav")

    monkeypatch.setattr(esc50, "download_file", serve_archive)
    noise_files = prepare_wham(str(tmp_path / "wham"))
    assert [os.path.basename(f.path) for f in noise_files] == ["tr_noise.wav"]
    assert (tmp_path / "wham" / "tt" / "tt_noise.wav").is_file()


def test_command_line_writes_a_mixture_to_listen_to(synthetic_data, tmp_path):
    clean = os.path.join(
        synthetic_data["esc50_folder"],
        "audio",
        sorted(os.listdir(os.path.join(synthetic_data["esc50_folder"], "audio")))[0],
    )
    output = tmp_path / "mix.wav"
    wham_prepare.main(
        ["--wham_folder", synthetic_data["wham_folder"], "--example_clean", clean, "--example_output", str(output)]
    )
    mixture, sample_rate = sf.read(output)
    assert sample_rate == 16000 and mixture.shape == (80000,)
    assert np.abs(mixture).max() == pytest.approx(1.0, abs=1e-3)

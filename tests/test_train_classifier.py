"""The classifier recipe: a tiny real run whose export loads into the interpreter recipe."""

import os

import pytest
import torch
from conftest import SMALL_DATA
from hyperpyyaml import load_hyperpyyaml

import lmac.loading as loading
import lmac.recipes.train_classifier as train_classifier
import lmac.training.classifier as classifier_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained_classifier(synthetic_data, tmp_path_factory):
    output_folder = tmp_path_factory.mktemp("classifier")
    brain = train_classifier.main(
        [
            os.path.join(REPO, "hparams", "cnn14_classifier.yaml"),
            "--data_folder",
            synthetic_data["esc50_folder"],
            "--output_folder",
            str(output_folder),
            "--width",
            "0.03125",
            "--n_classes",
            str(SMALL_DATA["n_classes"]),
            "--number_of_epochs",
            "2",
            "--batch_size",
            "3",
            "--num_workers",
            "0",
            "--add_wham_noise",
            "True",
            "--wham_folder",
            synthetic_data["wham_folder"],
            "--noise_num_workers",
            "0",
        ]
    )
    return brain, output_folder


def test_training_logs_accuracy_per_epoch_and_tests_the_best_checkpoint(trained_classifier):
    brain, output_folder = trained_classifier
    lines = (output_folder / "train_log.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[:2]] == ["epoch: 1", "epoch: 2"]
    assert all("valid acc:" in line for line in lines[:2])
    assert lines[2].startswith("Epoch loaded") and "test acc:" in lines[2]
    assert (output_folder / "confusion_matrix.png").stat().st_size > 5_000


def test_confusion_matrix_counts_every_test_clip(trained_classifier):
    brain, _ = trained_classifier
    predictions, labels = torch.cat(brain.predictions), torch.cat(brain.labels)
    matrix = classifier_training.confusion_matrix(predictions, labels, SMALL_DATA["n_classes"])
    assert matrix.sum() == len(labels) == SMALL_DATA["n_classes"]  # one test clip per class (fold 5)
    assert matrix.trace().item() / len(labels) == pytest.approx(brain.test_stats["acc"])


def test_the_export_loads_unchanged_into_the_interpreter_recipe(trained_classifier, tmp_path):
    _, output_folder = trained_classifier
    export = output_folder / "export"
    assert {"embedding_model.ckpt", "classifier.ckpt", "label_encoder.txt"} <= set(os.listdir(export))
    overrides = {
        "data_folder": None,  # not read: the classifier alone is loaded
        "output_folder": str(tmp_path),
        "width": 0.03125,
        "n_classes": SMALL_DATA["n_classes"],
        "embedding_model_path": str(export / "embedding_model.ckpt"),
        "classifier_model_path": str(export / "classifier.ckpt"),
    }
    with open(os.path.join(REPO, "hparams", "lmac_cnn14.yaml"), encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    loading.load_classifier(hparams)
    for name in ("embedding_model", "classifier"):
        saved = torch.load(export / f"{name}.ckpt")
        loaded = hparams[name].state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[key], loaded[key]) for key in saved), name


@pytest.mark.parametrize("n_classes", [2, 5])
def test_a_class_count_other_than_the_datas_is_an_error_as_in_every_recipe(synthetic_data, tmp_path, n_classes):
    with pytest.raises(
        ValueError, match=rf"n_classes={n_classes}, but the data in .* has 3 classes; pass --n_classes 3"
    ):
        train_classifier.main(
            [
                os.path.join(REPO, "hparams", "cnn14_classifier.yaml"),
                "--data_folder",
                synthetic_data["esc50_folder"],
                "--output_folder",
                str(tmp_path),
                "--width",
                "0.03125",
                "--n_classes",
                str(n_classes),
            ]
        )


RECIPES = ("cnn14_classifier.yaml", "lmac_cnn14.yaml", "l2i_cnn14.yaml")


def load_recipe(name, overrides):
    with open(os.path.join(REPO, "hparams", name), encoding="utf-8") as file:
        return load_hyperpyyaml(file, {"data_folder": None, **overrides})


def test_classifier_and_interpreters_use_the_same_features(tmp_path):
    classifier, *interpreters = (load_recipe(name, {"output_folder": str(tmp_path / name)}) for name in RECIPES)
    waveform = torch.randn(1, 16000)
    magnitude = torch.rand(1, 87, 513)
    for interpreter in interpreters:
        for key in (
            "sample_rate",
            "signal_length_s",
            "n_fft",
            "hop_length",
            "win_length",
            "n_mels",
            "width",
            "n_classes",
        ):
            assert classifier[key] == interpreter[key], key
        assert torch.equal(classifier["compute_stft"](waveform), interpreter["compute_stft"](waveform))
        assert torch.equal(classifier["classifier_input"](magnitude), interpreter["classifier_input"](magnitude))


@pytest.mark.parametrize("name", RECIPES)
def test_a_feature_or_width_flag_reaches_the_shared_block(tmp_path, name):
    hparams = load_recipe(
        name, {"output_folder": str(tmp_path), "n_mels": 64, "n_fft": 512, "width": 0.0625, "n_classes": 3}
    )
    assert hparams["classifier_input"].compute_fbank.fbank_matrix.shape == (257, 64)
    assert hparams["compute_stft"].n_fft == 512
    assert hparams["embedding_model"].norm0.num_features == 64  # CNN14 normalises each mel band
    assert hparams["classifier"].w.weight.shape == (3, 128)  # 2048 / 16 channels
    assert hparams["modules"]["classifier_input"] is hparams["classifier_input"]


def test_use_pretrained_starts_the_embedding_from_a_checkpoint_and_refuses_another_width(tmp_path):
    source = load_recipe("cnn14_classifier.yaml", {"output_folder": str(tmp_path / "source"), "width": 0.03125})
    torch.save(source["embedding_model"].state_dict(), tmp_path / "embedding_model.ckpt")
    settings = {"use_pretrained": True, "embedding_model_path": str(tmp_path / "embedding_model.ckpt")}
    hparams = load_recipe(
        "cnn14_classifier.yaml", {"output_folder": str(tmp_path / "run"), "width": 0.03125, **settings}
    )
    head = {key: value.clone() for key, value in hparams["classifier"].state_dict().items()}
    loading.load_pretrained_embedding(hparams)
    loaded, saved = hparams["embedding_model"].state_dict(), source["embedding_model"].state_dict()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    assert all(torch.equal(value, hparams["classifier"].state_dict()[key]) for key, value in head.items())
    wider = load_recipe(
        "cnn14_classifier.yaml", {"output_folder": str(tmp_path / "wider"), "width": 0.0625, **settings}
    )
    with pytest.raises(
        ValueError, match=r"embedding_model_path=.*embedding_model.ckpt' does not fit a CNN14 of width 0.0625"
    ):
        loading.load_pretrained_embedding(wider)

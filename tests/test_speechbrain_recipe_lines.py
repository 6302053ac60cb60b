"""SpeechBrain's own recipe-test command lines (tests/recipes/ESC50.csv upstream), run as written.

Upstream runs each on a 5-clip ESC-50 sample (one clip per fold, 3 classes)
and checks the files of the output folder; here the sample is synthetic.
"""

import os
import subprocess
import sys

import pandas as pd
import pytest
from speechbrain.dataio.encoder import CategoricalEncoder

import lmac.recipes.eval as lmac_eval
import lmac.recipes.export_interpreter as export_interpreter
import lmac.recipes.train_classifier as train_classifier
import lmac.recipes.train_l2i as train_l2i
import lmac.recipes.train_lmac as train_lmac
import lmac.recipes.train_nmf as train_nmf
from lmac.checks import SettingError
from lmac.cli import run_script
from lmac.data.synthetic import write_recipe_test_sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED_FILES = ("train_log.txt", "log.txt", "env.log", "hyperparams.yaml", os.path.join("save", "label_encoder.txt"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """SpeechBrain's recipe-test sample: 5 clips, one per fold, 3 classes of ESC-50 targets 0, 43 and 19."""
    folder = tmp_path_factory.mktemp("recipe_test") / "ESC50"
    metadata = write_recipe_test_sample(str(folder))
    assert sorted(metadata["fold"]) == [1, 2, 3, 4, 5] and sorted(set(metadata["target"])) == [0, 19, 43]  # not 0..N-1
    return folder


def interpreter_line_flags(sample, outputs):
    """An interpreter recipe's flags on ``sample`` with a random classifier of ``outputs`` classes, in debug mode.

    Without the model-randomisation cascade: on the published CNN14 it is a sixth of a recipe line's time on 2
    cores, and it is tested on the small models (tests/test_trust_measures.py, tests/test_eval.py).
    """
    return [
        "--randomisation_clips",
        "0",
        "--data_folder",
        str(sample),
        "--debug",
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        str(outputs),
    ]


def run_recipe(script, hparams, flags, output_folder):
    """Runs ``script hparams flags --output_folder output_folder`` from the repository; returns its output."""
    command = [sys.executable, script, os.path.join("hparams", hparams), *flags, "--output_folder", str(output_folder)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def assert_recipe_outputs(output_folder, script):
    for name in (*EXPECTED_FILES, script):
        assert (output_folder / name).is_file(), name


def test_the_classifier_line(sample, tmp_path):
    flags = ["--data_folder", str(sample), "--debug", "--out_n_neurons", "3", "--use_pretrained", "0"]
    run_recipe("train_classifier.py", "cnn14_classifier.yaml", flags, tmp_path)
    assert_recipe_outputs(tmp_path, "train_classifier.py")
    assert "test acc" in (tmp_path / "train_log.txt").read_text()
    encoder = CategoricalEncoder()
    encoder.load(str(tmp_path / "save" / "label_encoder.txt"))
    by_target = pd.read_csv(sample / "meta" / "esc50.csv").drop_duplicates("target").sort_values("target")
    assert [encoder.ind2lab[index] for index in range(3)] == list(by_target["category"])  # indices 0..2 in target order


def test_the_nmf_then_l2i_lines(sample, tmp_path):
    run_recipe("train_nmf.py", "l2i_cnn14.yaml", ["--data_folder", str(sample), "--debug"], tmp_path)
    assert_recipe_outputs(tmp_path, "train_nmf.py")
    run_recipe("train_l2i.py", "l2i_cnn14.yaml", interpreter_line_flags(sample, outputs=3), tmp_path)
    assert_recipe_outputs(tmp_path, "train_l2i.py")
    assert "test AD" in (tmp_path / "train_log.txt").read_text()


def test_the_lmac_line_interprets_a_head_of_another_class_count(sample, tmp_path):
    flags = [*interpreter_line_flags(sample, outputs=2), "--number_of_epochs", "1"]
    log = run_recipe("train_lmac.py", "lmac_cnn14.yaml", flags, tmp_path)
    assert_recipe_outputs(tmp_path, "train_lmac.py")
    assert "The classifier has 2 outputs (n_classes) and the data" in log and "accuracy is not computed" in log
    test_line = (tmp_path / "train_log.txt").read_text().splitlines()[-1]
    assert "test AD" in test_line and "test acc" not in test_line


@pytest.mark.parametrize(
    "module, hparams",
    [
        (train_lmac, "lmac_cnn14.yaml"),
        (train_classifier, "cnn14_classifier.yaml"),
        (train_l2i, "l2i_cnn14.yaml"),
        (train_nmf, "l2i_cnn14.yaml"),
        (lmac_eval, "lmac_cnn14.yaml"),
        (export_interpreter, "lmac_cnn14.yaml"),
    ],
)
def test_a_misspelt_flag_gets_one_line_with_the_closest_key(module, hparams, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [os.path.basename(module.__file__)])
    argv = [
        os.path.join("hparams", hparams),
        "--data_folder",
        str(tmp_path),
        "--output_folder",
        str(tmp_path / "run"),
        "--n_clases",
        "3",
    ]
    with pytest.raises(SystemExit) as stopped:
        run_script(module.main, argv)
    script = os.path.basename(module.__file__)
    assert stopped.value.code == 2
    assert (
        capsys.readouterr().err
        == f"{script}: error: --n_clases is not a setting of hparams/{hparams}; did you mean --n_classes?\n"
    )
    assert not (tmp_path / "run").exists()  # stopped before any work


@pytest.mark.parametrize(
    "module, flags, message",
    [
        (train_lmac, ["--mask_reference", "meen"], "mask_reference='meen'; accepted values are zeros, noise_floor"),
        (
            lmac_eval,
            ["--compare", "lmac,gradcm"],
            "compare='lmac,gradcm': unknown method(s) ['gradcm']; accepted: lmac,",
        ),
        (train_classifier, ["--train_fold_nums", "[1, 9]"], "train_fold_nums"),
    ],
)
def test_a_bad_value_of_a_setting_gets_one_line_and_the_traceback_only_under_debug(
    module, flags, message, synthetic_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [os.path.basename(module.__file__)])
    data = synthetic_data["esc50_folder"]
    argv = ["hparams/lmac_cnn14.yaml" if module is not train_classifier else "hparams/cnn14_classifier.yaml"]
    argv += [
        "--data_folder",
        data,
        "--output_folder",
        str(tmp_path / "run"),
        "--use_pretrained",
        "False",
        "--width",
        "0.0625",
        *flags,
    ]
    with pytest.raises(SystemExit) as stopped:
        run_script(module.main, argv)
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.count("\n") == 1
    assert error.startswith(f"{os.path.basename(module.__file__)}: error: ") and message in error
    with pytest.raises(SettingError) as raised:
        run_script(module.main, [*argv, "--debug"])
    assert message in str(raised.value)


def test_a_missing_data_folder_says_what_to_pass(tmp_path):
    result = subprocess.run(
        [sys.executable, "train_lmac.py", "hparams/lmac_cnn14.yaml", "--output_folder", str(tmp_path / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "torchvision" not in result.stderr  # SpeechBrain's false warning on import is kept from printing
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "train_lmac.py: error: data_folder has no default in hparams/lmac_cnn14.yaml: pass --data_folder (a folder with meta/esc50.csv"
        )
    )
    assert not (tmp_path / "run").exists()

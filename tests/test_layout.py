"""The house rules of the layout: scripts at the top call the package; the library imports no script and no
command-line module; old saved configurations load or fail in one line."""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import pytest
from hyperpyyaml import load_hyperpyyaml

from lmac.compat import OLD_MODULES, OldConfigurationError, old_module_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO, "*.py")))
COMMAND_LINE = ("lmac.cli", "lmac.recipes")


def imported_modules(path):
    """The dotted names a Python file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_modules(*, command_line):
    """The package's files, those of the command line (``COMMAND_LINE``) or those of the library."""
    paths = sorted(glob.glob(os.path.join(REPO, "lmac", "**", "*.py"), recursive=True))
    dotted = {path: os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__") for path in paths}
    return [path for path, name in dotted.items() if name.startswith(COMMAND_LINE) == command_line]


RECIPES = [
    "benchmark",
    "demo",
    "esc50_prepare",
    "eval",
    "export_interpreter",
    "make_real_set",
    "make_synthetic_data",
    "sweep",
    "train_classifier",
    "train_l2i",
    "train_lmac",
    "train_nmf",
    "wham_prepare",
]

# What code written against SpeechBrain's interpret recipe imports from its top-level modules, and the package's
# module each name comes from.
SPEECHBRAIN_IMPORTS = {
    "interpreter_brain": {"InterpreterBrain": "lmac.training.brain"},
    "train_lmac": {"LMAC": "lmac.training.lmac", "tv_loss": "lmac.training.lmac"},
    "esc50_prepare": {"prepare_esc50": "lmac.data.esc50", "dataio_prep": "lmac.data.esc50"},
    "wham_prepare": {"prepare_wham": "lmac.data.wham", "combine_batches": "lmac.data.wham"},
    "train_l2i": {"L2I": "lmac.training.l2i"},
}


def test_the_modules_at_the_top_are_the_recipes_and_the_names_speechbrain_s_recipe_imports_from_the_package():
    assert SCRIPTS == sorted({*RECIPES, *SPEECHBRAIN_IMPORTS})
    for script in SCRIPTS:
        expected = {f"lmac.recipes.{script}", f"lmac.recipes.{script}.command_line"} if script in RECIPES else set()
        for name, module in SPEECHBRAIN_IMPORTS.get(script, {}).items():
            expected |= {module, f"{module}.{name}"}
        assert imported_modules(os.path.join(REPO, f"{script}.py")) == expected, script


def test_the_import_lines_of_speechbrain_s_interpret_recipe_give_the_package_s_objects():
    lines = ["import importlib"]
    for script, names in SPEECHBRAIN_IMPORTS.items():
        lines.append(f"from {script} import {', '.join(names)}")
        lines += [
            f"assert {name} is importlib.import_module({module!r}).{name}, {name!r}" for name, module in names.items()
        ]
    result = subprocess.run([sys.executable, "-c", "\n".join(lines)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("path", [*glob.glob(os.path.join(REPO, "lmac", "**", "*.py"), recursive=True)])
def test_no_module_of_the_package_imports_a_script(path):
    assert not imported_modules(path) & set(SCRIPTS), path


@pytest.mark.parametrize("path", package_modules(command_line=False))
def test_the_library_does_not_import_the_command_line(path):
    assert not [name for name in imported_modules(path) if name.startswith(COMMAND_LINE)], path


def test_a_configuration_saved_with_the_flat_layout_loads_into_the_package_s_classes():
    saved = """
compute_stft: !new:features.DeviceSTFT {sample_rate: 16000, n_fft: 64, hop_length: 10, win_length: 20}
l1_weight: !new:train_lmac.AdaptiveWeight {initial: 2.0, target: 0.3, rate: 0.0}
checkpointer: !new:interpreter_brain.CompleteCheckpointer {checkpoints_dir: /nonexistent}
frozen: !name:interpreter_brain.FrozenClassifier
family_item: !name:classifier_families.family_item
"""
    with old_module_names("hyperparams.yaml", saved):
        loaded = load_hyperpyyaml(saved)
    built = {
        key: f"{type(loaded[key]).__module__}.{type(loaded[key]).__name__}"
        for key in ("compute_stft", "l1_weight", "checkpointer")
    }
    assert built == {
        "compute_stft": "lmac.features.DeviceSTFT",
        "l1_weight": "lmac.training.lmac.AdaptiveWeight",
        "checkpointer": "lmac.training.checkpointing.CompleteCheckpointer",
    }
    assert loaded["frozen"].__module__ == "lmac.models.frozen_classifier"
    assert loaded["family_item"].__module__ == "lmac.models.families"
    with pytest.raises((ImportError, AttributeError)):  # outside the context the old names are gone again
        load_hyperpyyaml("w: !new:train_lmac.AdaptiveWeight {initial: 2.0, target: 0.3, rate: 0.0}")


def test_a_saved_configuration_naming_what_no_longer_exists_fails_in_one_line_that_says_what_to_do():
    saved = "x: !new:features.NoSuchModule {}"
    with pytest.raises(OldConfigurationError) as error, old_module_names("run/hyperparams.yaml", saved):
        load_hyperpyyaml(saved)
    message = str(error.value)
    assert "\n" not in message and message.startswith("run/hyperparams.yaml names something this version does not have")
    assert "export_interpreter.py" in message


def test_a_module_of_one_s_own_with_an_old_name_still_imports_itself_and_other_errors_stay_as_they_are(
    tmp_path, monkeypatch
):
    (tmp_path / "features.py").write_text("class MyInput:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "features", raising=False)
    saved = "input: !new:features.MyInput\nw: !new:train_lmac.AdaptiveWeight {initial: 2.0, target: 0.3, rate: 0.0}"
    with old_module_names("block.yaml", saved):
        assert "map_decoder" not in sys.modules  # an old name the file does not name is left alone
        loaded = load_hyperpyyaml(saved)
    assert type(loaded["input"]).__module__ == "features" and str(tmp_path) in sys.modules["features"].__file__
    assert type(loaded["w"]).__module__ == "lmac.training.lmac"
    with pytest.raises(ImportError) as error, old_module_names("block.yaml", "x: !new:nosuchpackage.Thing {}"):
        load_hyperpyyaml("x: !new:nosuchpackage.Thing {}")
    assert not isinstance(error.value, OldConfigurationError)  # not a saved configuration's fault: no "export again"


def test_every_old_module_name_stands_for_modules_that_exist():
    for old_name, modules in OLD_MODULES.items():
        assert all(os.path.isfile(os.path.join(REPO, *name.split(".")) + ".py") for name in modules), old_name


IMPORT_LINE = re.compile(r"^\s*(?:>>> )?((?:from [\w.]+ import [\w, ]+)|(?:import [\w.]+))\s*$")


def documented_import_lines():
    """Every import line of the README, the docs and the docstrings of the package and the scripts: ``{line: where}``."""
    texts = {
        path: open(path, encoding="utf-8").read()
        for path in [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md"))]
    }
    for path in [
        *glob.glob(os.path.join(REPO, "lmac", "**", "*.py"), recursive=True),
        *glob.glob(os.path.join(REPO, "*.py")),
    ]:
        tree = ast.parse(open(path, encoding="utf-8").read())
        nodes = [
            tree,
            *(
                node
                for node in ast.walk(tree)
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            ),
        ]
        texts[path] = "\n".join(filter(None, (ast.get_docstring(node) for node in nodes)))
    lines = {}
    for path, text in texts.items():
        for line in text.splitlines():
            match = IMPORT_LINE.match(line)
            if match:
                lines.setdefault(match.group(1), os.path.relpath(path, REPO))
    return lines


def test_every_import_line_of_the_docs_and_docstrings_runs():
    lines = documented_import_lines()
    assert "from lmac.inference import LMACInterpreter" in lines and len(lines) >= 5
    program = (
        "import json, sys\nfailed = {}\n"
        f"for line in {sorted(lines)!r}:\n"
        "    try:\n        exec(line, {})\n"
        "    except Exception as error:\n        failed[line] = repr(error)\n"
        "print(json.dumps(failed))"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    failed = json.loads(result.stdout.strip().splitlines()[-1])
    assert failed == {}, {line: (lines[line], error) for line, error in failed.items()}

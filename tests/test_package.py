"""What ships: the configs `build` writes for the default profile (kept as golden files, since the
model repository itself is build output and not tracked), and a wheel that carries the data, the
default configuration and the python models that `build` needs without the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from google.protobuf import text_format

import model_selector
from model_selector.build import repository as writer
from model_selector.build.export import resolve_backbone
from model_selector.core.config import PACKAGED_CONFIG, load_config
from tests.paths import PROJECT_ROOT

GOLDEN = PROJECT_ROOT / "tests" / "golden" / "model_repository"
PACKAGE = Path(model_selector.__file__).parent


def default_profile() -> writer.RepositoryShape:
    """The shape `model-selector build` writes with no options: MiniLM, the default catalog, --device gpu."""
    backbone = resolve_backbone("minilm")
    return writer.RepositoryShape(384, len(load_config(PACKAGED_CONFIG).model_names), backbone.pad_id, "gpu",
                                  backbone.max_length)


def test_the_default_profile_writes_the_golden_configs(tmp_path):
    writer.write_configs(tmp_path, default_profile())
    written = {p.parent.name: p.read_text() for p in tmp_path.glob("*/config.pbtxt")}
    golden = {p.parent.name: p.read_text() for p in GOLDEN.glob("*/config.pbtxt")}
    assert sorted(written) == sorted(golden)
    for name, text in golden.items():
        assert written[name] == text, (f"{name}/config.pbtxt differs from tests/golden: if the change is meant, "
                                       "copy the new file there")
        text_format.Parse(text, writer.mc.ModelConfig())  # still a valid ModelConfig


def test_the_checkout_links_the_packaged_default_config():
    assert (PROJECT_ROOT / "configs" / "router.yaml").resolve() == PACKAGED_CONFIG.resolve()


def _package_files() -> set[str]:
    """What the wheel must hold: every module and every package data file of the source tree."""
    files = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel` of a copy of the sources (so nothing is written into the checkout), offline."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    shutil.copytree(PROJECT_ROOT / "tools", source / "tools",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(out), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("model_selector-*.whl")
    return wheel


@pytest.mark.integration
def test_the_wheel_holds_the_package_its_data_and_the_python_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _package_files()
    assert expected - names == set(), f"missing from the wheel: {sorted(expected - names)}"
    for required in ("model_selector/configs/router.yaml", "model_selector/triton_models/decision/model.py",
                     "model_selector/triton_models/tokenizer/model.py",
                     "model_selector/data/mmlu_pro/questions.jsonl.gz",
                     "model_selector/data/natural_prompts/natural_prompts.jsonl.gz", "model_selector/py.typed"):
        assert required in names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "model-selector = model_selector.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.integration
def test_the_installed_wheel_finds_its_data_from_any_directory(wheel, tmp_path):
    """Installed without the checkout (a plain directory on PYTHONPATH ahead of the editable install), run
    from elsewhere: the data, the default configuration and the python models come from the package."""
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import model_selector, pathlib\n"
            "from model_selector.build import repository as writer\n"
            "from model_selector.core.config import default_config_path, load_config\n"
            "from model_selector.data.loaders import DEFAULT_DATA_DIR, load_mmlu_pro, load_natural_prompts\n"
            "config = load_config(default_config_path())\n"
            "bench = load_mmlu_pro(config.model_names, DEFAULT_DATA_DIR)\n"
            "train, validation = load_natural_prompts()\n"
            "writer.copy_python_models(pathlib.Path('repo'))\n"
            "print(model_selector.__file__, len(bench), len(train) + len(validation),\n"
            "      sorted(p.parent.parent.name for p in pathlib.Path('repo').glob('*/1/model.py')))\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    location, questions, prompts, models = result.stdout.split(maxsplit=3)
    assert Path(location).is_relative_to(target)
    assert int(questions) == 9578 and int(prompts) == 4114 and models.strip() == "['decision', 'tokenizer']"
    check = subprocess.run([sys.executable, "-m", "model_selector.cli", "config", "check",
                            str(target / "model_selector" / "configs" / "router.yaml")],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert check.returncode == 0 and "0 problem(s)" in check.stdout, check.stdout + check.stderr

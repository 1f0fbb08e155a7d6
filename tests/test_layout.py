"""The layers import one way, and each module only what its job needs (start-up is paid on every run).

Checked in fresh interpreters: importing a module must not load what its layer may not use.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "transforms", "matplotlib", "ray")


def loaded_after(code: str) -> dict[str, bool]:
    """Which of HEAVY a fresh interpreter has loaded after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{name: name in sys.modules for name in {list(HEAVY)!r}}}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module", ["csm_synthetic", "csm_synthetic.corpus", "csm_synthetic.builder", "csm_synthetic.inspect",
               "csm_synthetic.cli", "csm_synthetic.folders", "csm_synthetic.settings", "csm_synthetic.testing.demo",
               "csm_synthetic.sources", "csm_synthetic.manifest", "csm_synthetic.dataset_input", "csm_synthetic.measures"]
)
def test_the_raw_corpus_layer_loads_neither_transforms_nor_torch(module):
    loaded = loaded_after(f"import {module}")
    assert not loaded["transforms"] and not loaded["torch"] and not loaded["transformers"], loaded


def test_the_builder_works_without_loading_the_transforms(tmp_path):
    from conftest import write_conversation

    write_conversation(tmp_path / "corpus", "en/a", [1, 2])
    code = (
        "from csm_synthetic import load_turns\n"
        f"assert len(load_turns({str(tmp_path / 'corpus')!r}, cache_dir={str(tmp_path / 'cache')!r})['train']) == 2"
    )
    loaded = loaded_after(code)
    assert loaded["datasets"] and not loaded["transforms"] and not loaded["torch"], loaded


@pytest.mark.parametrize("module", ["transforms.core.plan", "transforms.core.samples", "transforms.core.codes",
                                    "transforms.core.labels", "transforms.core.windows", "transforms.core.csm",
                                    "transforms.core.quality", "transforms.core.audio_prep", "transforms.core.asr"])
def test_the_steps_are_free_of_datasets_and_of_heavy_imports_until_used(module):
    loaded = loaded_after(f"import {module}")
    assert not loaded["datasets"] and not loaded["torch"] and not loaded["transformers"], loaded


def test_the_codec_step_and_training_helpers_need_no_datasets():
    loaded = loaded_after(
        "import transforms.core.codec, transforms.training.collator, transforms.training.codes_training\n"
        "import sys\nassert 'transforms.maps' not in sys.modules and 'transforms.pipeline.prepare' not in sys.modules"
    )
    assert not loaded["datasets"] and loaded["torch"], loaded


def test_the_export_layer_needs_neither_torch_nor_transformers_and_matplotlib_only_to_draw():
    modules = ["hub", "content", "repository", "card", "figures"]
    loaded = loaded_after("\n".join(f"import transforms.export.{name}" for name in modules))
    assert not loaded["torch"] and not loaded["transformers"] and not loaded["matplotlib"], loaded


def test_no_module_of_the_project_imports_ray_until_the_ray_engine_runs():
    modules = ["transforms.pipeline.prepare", "transforms.pipeline.ray_engine", "transforms.pipeline.ray_steps",
               "transforms.pipeline.parquet_shards", "transforms.export.hub", "transforms.training.collator"]
    loaded = loaded_after("\n".join(f"import {name}" for name in modules))
    assert loaded["transforms"] and not loaded["ray"], loaded


SCRIPTS = ROOT / "scripts"


@pytest.mark.parametrize(
    "script, arguments",
    [
        ("prepare_dataset_for_training.py", ["--help"]),
        ("prepare_dataset_for_training.py", ["--input_dir", ".", "--output_dir", "x", "--batch_size", "0"]),
        ("prepare_dataset_for_training.py", ["--input_dir", "no-such-corpus", "--output_dir", "x"]),
        ("prepare_dataset_for_training.py", ["--input_dir", ".", "--output_dir", "x", "--ray_address", "auto"]),
        ("verify_shard.py", ["--help"]),
        ("push_to_hub.py", ["--help"]),
        ("inspect_corpus.py", ["--help"]),
        ("create_dummy_data.py", ["--help"]),
    ],
)
def test_help_and_argument_errors_answer_without_torch(script, arguments):
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, *{arguments!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPTS / script)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, file=sys.stderr)\n"
    )
    probe = f"{code}\nimport json\nprint(json.dumps({{name: name in sys.modules for name in {list(HEAVY)!r}}}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not loaded["torch"] and not loaded["transformers"], loaded
    status = result.stderr.strip().splitlines()[-1]
    assert status == ("exit 0" if arguments == ["--help"] else "exit 2"), result.stderr

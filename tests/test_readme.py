"""Every Python snippet of the README runs as written, against offline stand-ins.

The Hub ids of the snippets are replaced by a folder holding the offline processor and a tiny random CSM;
"synthetic-dataset" and "prepared" are a small demo corpus and its codes-format output in the working
folder; training runs one step.
"""

import json
import os
import re
import sys
from pathlib import Path

import datasets
import pytest
from transformers import TrainingArguments

from csm_synthetic.corpus import read_corpus
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.core.csm import load_processor
from transforms.core.quality import QualityChecks
from transforms.pipeline.options import PrepareOptions
from transforms.pipeline.prepare import prepare
from transforms.testing.offline import build_tiny_codec, build_tiny_model, save_offline_processor

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_IDS = ("unsloth/csm-1b", "sesame/csm-1b")


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with `synthetic-dataset/`, `turns.jsonl` (its manifest), `prepared/` (codes format) and `csm/`
    (processor + tiny model)."""
    folder = tmp_path_factory.mktemp("readme")
    create_demo_corpus(folder / "synthetic-dataset", languages=("en", "de"), conversations_per_language=5,
                       turns=(3, 5), seconds=(0.3, 1.0))
    rows = [
        {"conversation_id": c.conversation_id, "turn_index": t.index, "speaker": t.speaker, "text": t.text,
         "audio": os.path.relpath(t.audio_path, folder), "language": c.language}
        for c in read_corpus(folder / "synthetic-dataset").conversations for t in c.turns
    ]
    (folder / "turns.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    model_dir = save_offline_processor(folder / "csm")  # a fresh one: a processor that has run saves differently
    build_tiny_model(load_processor(str(model_dir))).save_pretrained(model_dir)
    build_tiny_codec().save_pretrained(folder / "codec")
    prepare(PrepareOptions(
        input_dir=str(folder / "synthetic-dataset"), output_dir=str(folder / "prepared"), model_id=str(model_dir),
        format="codes", codec_model_id=str(folder / "codec"), cache_dir=str(folder / "cache"), num_proc=1,
        corpus=CorpusSettings(validation_fraction=0.3, test_fraction=0.2), quality=QualityChecks.off(),
    ))
    return folder


def one_step_arguments(*args, **kwargs):
    """The snippets' `TrainingArguments`, cut to one CPU step without logging or checkpoints."""
    kwargs.update(max_steps=1, report_to=[], use_cpu=True, save_strategy="no", eval_strategy="no")
    return REAL_TRAINING_ARGUMENTS(*args, **kwargs)


REAL_TRAINING_ARGUMENTS = TrainingArguments


def test_the_readme_has_the_snippets_this_test_runs():
    assert len(python_snippets()) >= 3


@pytest.mark.parametrize("number", range(len(python_snippets())))
def test_readme_snippet_runs(number, workspace, monkeypatch):
    code = python_snippets()[number]
    for hub_id in HUB_IDS:
        code = code.replace(f'"{hub_id}"', repr(str(workspace / "csm")))
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(workspace / "cache"))  # not the user's cache
    # the module the snippets import from: importing CsmProcessor puts a new `transformers` in sys.modules
    monkeypatch.setattr(sys.modules["transformers"], "TrainingArguments", one_step_arguments)
    exec(compile(code, f"README.md snippet {number}", "exec"), {})  # noqa: S102

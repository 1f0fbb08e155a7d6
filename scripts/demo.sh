#!/usr/bin/env bash
# The whole pipeline on a built-in demo, offline: a demo corpus (with faulty conversations), an offline
# CSM processor, preparation with context, and the row-by-row check. Everything goes to demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
uv sync --quiet --all-extras --compile-bytecode  # PYTHONDONTWRITEBYTECODE machines would recompile torch on every command
uv run python scripts/create_dummy_data.py --output_dir demo/corpus --with_faults --overwrite
uv run python scripts/make_offline_processor.py --output_dir demo/processor
uv run python scripts/inspect_corpus.py --input_dir demo/corpus --json demo/inspect.json
uv run python scripts/prepare_dataset_for_training.py --input_dir demo/corpus --output_dir demo/prepared \
    --model_id demo/processor --max_history 5 --validation_fraction 0.2 --test_fraction 0.2 --overwrite
uv run python scripts/verify_shard.py --output_dir demo/prepared

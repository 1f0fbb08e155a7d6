"""Write an offline stand-in for the sesame/csm-1b processor to a directory.

The result is a real CsmProcessor (a small byte-level BPE tokenizer trained on the spot with the four
CSM special tokens, the 24 kHz EncodecFeatureExtractor and the real csm-1b chat template). Load it
without network access with ``CsmProcessor.from_pretrained(DIR)`` or ``AutoProcessor.from_pretrained(DIR)``.
"""

from __future__ import annotations

import argparse

from transforms.testing.offline import AUDIO_EOS_TOKEN, AUDIO_TOKEN, BOS_TOKEN, EOS_TOKEN, save_offline_processor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Save an offline stand-in for the sesame/csm-1b processor (no download): a CsmProcessor with a small "
            "byte-level BPE tokenizer carrying <|begin_of_text|>, <|end_of_text|> (eos and pad), <|AUDIO|> and "
            "<|audio_eos|>, a 24 kHz EncodecFeatureExtractor and the real csm-1b chat template. The same output "
            "is produced on every run."
        ),
        epilog=(
            "Example: uv run python scripts/make_offline_processor.py --output_dir /tmp/csm-offline\n"
            "then: CsmProcessor.from_pretrained('/tmp/csm-offline') or AutoProcessor.from_pretrained(...)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output_dir",
        required=True,
        help="directory to write the processor files into (created if missing; existing files are overwritten)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = save_offline_processor(args.output_dir)
    from transformers import CsmProcessor

    tokenizer = CsmProcessor.from_pretrained(str(output_dir)).tokenizer
    ids = ", ".join(f"{t}={tokenizer.convert_tokens_to_ids(t)}" for t in (BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN))
    print(f"Saved offline CSM processor to {output_dir.resolve()} (vocab {len(tokenizer)}; {ids})")


if __name__ == "__main__":
    main()

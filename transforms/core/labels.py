"""The label rule of CSM training samples, in one place.

`CsmProcessor(output_labels=True)` labels every audio frame (`<|AUDIO|>`) and `<|audio_eos|>` with its
token id and everything else with -100; with `depth_decoder_labels_ratio < 1` it gives a random
`int(n * (1 - ratio))` of the `n` audio frames -101 instead: they train the backbone (codebook 0) only.
Both sample formats and both collators follow this rule through the names below.
"""

from __future__ import annotations

import hashlib

IGNORE_INDEX = -100  # no loss at this position (text, padding; context audio in target-only training)
BACKBONE_ONLY_LABEL = -101  # an audio frame that trains the backbone but not the depth decoder


def backbone_only_count(num_frames: int, depth_decoder_labels_ratio: float) -> int:
    return int(num_frames * (1 - depth_decoder_labels_ratio))


def backbone_only_frames(num_frames: int, depth_decoder_labels_ratio: float, generator=None):
    """Positions (a torch tensor, among `range(num_frames)`) of the frames that train the backbone only.

    Drawn as `CsmProcessor` draws them (`torch.randperm`), with `generator` or torch's global RNG.
    """
    import torch  # only where labels are drawn; the constants above stay import-light

    count = backbone_only_count(num_frames, depth_decoder_labels_ratio)
    return torch.randperm(num_frames, generator=generator)[:count]


def label_seed(seed: int, conversation_id: str, turn_index: int) -> int:
    """The seed of one stored sample's draw: reruns, resumes and other engines give the same labels."""
    digest = hashlib.sha256(f"{seed}/{conversation_id}/{turn_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

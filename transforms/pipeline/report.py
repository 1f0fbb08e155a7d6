"""The report of a prepare run (`prepare_report.json`) and the summary printed at its end.

Every count comes from what the steps returned: corpus problems from the reader, skipped turns and the
problems of bad turns (found when decoding audio or tokenizing text) from the plans (`PlanWindows`),
samples from the sample maps; nothing is planned a second time here.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np

from csm_synthetic.corpus import Corpus
from csm_synthetic.environment import package_versions
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.splits import SPLITS

from ..core.plan import windows_of
from ..core.quality import DROPPED, FLAGGED, CorpusQuality
from .options import REPORT_NAME, PrepareOptions

PLAN_COLUMNS = ["conversation_id", "num_samples", "message_tokens", "window_start", "skipped"]


@dataclass(frozen=True)
class SplitResult:
    planned: datasets.Dataset  # conversation rows with their plan (`transforms.maps.plan_conversations`)
    samples: datasets.Dataset

    @property
    def planned_samples(self) -> int:
        starts = self.planned.data.column("window_start").combine_chunks().flatten().to_numpy()
        return int(np.sum(starts >= 0))

    @classmethod
    def checked(cls, planned: datasets.Dataset, samples: datasets.Dataset) -> SplitResult:
        """The result of `samples` built from `planned`; a RuntimeError if their counts disagree."""
        result = cls(planned, samples)
        if len(samples) != result.planned_samples:
            raise RuntimeError(f"{len(samples)} samples written where {result.planned_samples} were planned")
        return result

    @classmethod
    def concatenate(cls, results: list[SplitResult]) -> SplitResult:
        return cls(
            datasets.concatenate_datasets([result.planned for result in results]),
            datasets.concatenate_datasets([result.samples for result in results]),
        )


def distribution(values, unit: str) -> dict:
    if not len(values):
        return {"count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {
        "count": int(array.size),
        f"min_{unit}": round(float(array.min()), 3),
        f"mean_{unit}": round(float(array.mean()), 3),
        f"p50_{unit}": round(float(np.percentile(array, 50)), 3),
        f"p95_{unit}": round(float(np.percentile(array, 95)), 3),
        f"max_{unit}": round(float(array.max()), 3),
        f"total_{unit}": round(float(array.sum()), 3),
    }


def plan_figures(planned: datasets.Dataset, sampling_rate: int) -> tuple[list[dict], list[int], list[float]]:
    """Skipped turns, and the tokens and audio seconds of every planned sample, from the plans' columns."""
    skipped, tokens, seconds = [], [], []
    for row in planned.select_columns(PLAN_COLUMNS).to_list():
        skipped += [{"conversation_id": row["conversation_id"], **skip} for skip in row["skipped"]]
        for window in windows_of(row["window_start"], row["message_tokens"]):
            tokens.append(window.num_tokens)
            seconds.append(sum(row["num_samples"][window.start : window.target + 1]) / sampling_rate)
    return skipped, tokens, seconds


def step_problems(planned: datasets.Dataset) -> tuple[list[dict], set[tuple[str, int]]]:
    """The problems the steps found (bad turns and their cuts, as `Problem.to_dict()`s), and the
    (conversation_id, turn_index) of every turn they cut off, from the plans' columns."""
    problems, cut_turns = [], set()
    for row in planned.select_columns(["conversation_id", "turn_index", "problems"]).to_list():
        problems += [{"conversation_id": row["conversation_id"], **problem} for problem in row["problems"]]
        if row["problems"]:
            cut = row["problems"][0]["turn_index"]
            cut_turns.update((row["conversation_id"], turn) for turn in row["turn_index"] if turn >= cut)
    return problems, cut_turns


def merged_problems(corpus: Corpus, results: dict[str, SplitResult]) -> tuple[list[dict], set[tuple[str, int]]]:
    """The reader's problems and the steps', in conversation order (each conversation's reader problems
    first), and the turns the steps cut off."""
    problems, cut_turns = [problem.to_dict() for problem in corpus.problems], set()
    for result in results.values():
        found, cut = step_problems(result.planned)
        problems += found
        cut_turns |= cut
    problems.sort(key=lambda problem: problem["conversation_id"])  # stable
    return problems, cut_turns


def quality_entries(planned: datasets.Dataset) -> list[dict]:
    """Every failed quality check of the plans (`conversation_id`, `turn_index`, `check`, `value`, `action`,
    `detail`)."""
    entries = []
    for row in planned.select_columns(["conversation_id", "quality"]).to_list():
        entries += [{"conversation_id": row["conversation_id"], **entry} for entry in row["quality"]]
    return entries


def quality_report(options: PrepareOptions, results: dict[str, SplitResult], corpus_quality: CorpusQuality) -> dict:
    """The checks' settings, the corpus decisions, counts by check and action, and every failed check of a turn."""
    entries = [entry for result in results.values() for entry in quality_entries(result.planned)]
    entries.sort(key=lambda entry: (entry["conversation_id"], entry["turn_index"]))
    counts: dict[str, dict[str, int]] = {}
    for entry in entries:
        by_action = counts.setdefault(entry["check"], {FLAGGED: 0, DROPPED: 0})
        by_action[entry["action"]] += 1
    return {
        "checks": {**options.quality.to_dict(), "asr_model": options.asr_model,
                   "normalize_loudness": options.normalize_loudness},
        "corpus": corpus_quality.to_dict(),
        "counts": dict(sorted(counts.items())),
        "turns": entries,
    }


def split_shares(settings: CorpusSettings) -> dict[str, str]:
    """Each split's share of conversations, as the flags set it."""
    validation, test = settings.validation_fraction, settings.test_fraction
    return {
        "train": f"1 - validation_fraction - test_fraction = {1 - validation - test:g}",
        "validation": f"validation_fraction {validation:g}",
        "test": f"test_fraction {test:g}",
    }


def empty_splits(settings: CorpusSettings, conversations: int, results: dict[str, SplitResult]) -> dict[str, str]:
    """The splits left out of the output because they have no sample, each with why."""
    shares = split_shares(settings)
    reasons = {}
    for split in SPLITS:
        if split not in results:
            reasons[split] = f"no conversation's id hashed into it ({shares[split]}, {conversations} conversations)"
        elif not len(results[split].samples):
            reasons[split] = (
                f"its {len(results[split].planned)} conversations gave no sample (every turn was skipped: see skipped)"
            )
    return reasons


def build_report(
    options: PrepareOptions,
    corpus: Corpus,
    results: dict[str, SplitResult],
    seconds: float,
    setup_seconds: float,
    files: dict[str, dict] | None = None,
    corpus_quality: CorpusQuality = CorpusQuality(),
) -> dict:
    """The report; `files`: each output file's size and checksum by its path in the output (what verify checks)."""
    skipped, sample_tokens, sample_seconds = [], [], []
    for result in results.values():
        split_skipped, split_tokens, split_seconds = plan_figures(result.planned, options.corpus.target_sampling_rate)
        skipped += split_skipped
        sample_tokens += split_tokens
        sample_seconds += split_seconds
    skipped.sort(key=lambda skip: (skip["conversation_id"], skip["turn_index"]))  # the corpus' order
    problems, cut_turns = merged_problems(corpus, results)
    turn_seconds = [  # the turns kept by the reader and the steps: each has a sample or a skip
        turn.duration
        for conversation in corpus.conversations
        for turn in conversation.turns
        if (conversation.conversation_id, turn.index) not in cut_turns
    ]
    return {
        "arguments": {**options.output_defining(), "output_dir": options.output_dir, "num_proc": options.num_proc},
        "versions": package_versions(),
        "counts": {
            "conversations": len(corpus.conversations),
            "turns": len(turn_seconds),
            "samples": sum(len(result.samples) for result in results.values()),
            "skipped_samples": len(skipped),
            "problems": len(problems),
            "by_split": {
                split: {"conversations": len(result.planned), "samples": len(result.samples)}
                for split, result in results.items()
            },
            # left out of the output (load_from_disk has no such key): why each is empty
            "empty_splits": empty_splits(options.corpus, len(corpus.conversations), results),
        },
        "audio": {
            "turn_seconds": distribution(turn_seconds, "seconds"),
            "sample_seconds": distribution(sample_seconds, "seconds"),
            "hours": round(sum(turn_seconds) / 3600, 4),
        },
        "tokens": {"sample_tokens": distribution(sample_tokens, "tokens")},
        "elapsed_seconds": round(seconds, 2),
        "setup_seconds": round(setup_seconds, 2),  # of elapsed: loading the processor (and codec), reading the corpus
        "problems": problems,
        "skipped": skipped,
        "files": dict(sorted((files or {}).items())),
        "quality": quality_report(options, results, corpus_quality),
    }


def format_summary(report: dict) -> str:
    """The end-of-run summary for a terminal."""
    counts, audio = report["counts"], report["audio"]
    lines = [
        "",
        f"Prepared {counts['samples']} samples from {counts['conversations']} conversations "
        f"({counts['turns']} turns, {audio['hours']:.2f} audio hours) in {report['elapsed_seconds']:.1f} s",
    ]
    for split, numbers in counts["by_split"].items():
        lines.append(f"  {split:<10} {numbers['conversations']:>6} conversations {numbers['samples']:>8} samples")
    for split, reason in counts.get("empty_splits", {}).items():
        lines.append(f"  {split:<10} empty, not in the output: {reason}")
    tokens = report["tokens"]["sample_tokens"]
    if tokens.get("count"):
        lines.append(f"  tokens per sample: mean {tokens['mean_tokens']:.0f}, max {tokens['max_tokens']:.0f}")
    lines.append(f"  skipped samples: {counts['skipped_samples']}   problems: {counts['problems']}")
    kinds: dict[str, int] = {}
    for problem in report["problems"]:
        kinds[problem["kind"]] = kinds.get(problem["kind"], 0) + 1
    lines += [f"    {kind}: {count}" for kind, count in sorted(kinds.items())]
    quality = report["quality"]["counts"]
    dropped = sum(counts[DROPPED] for counts in quality.values())
    flagged = sum(counts[FLAGGED] for counts in quality.values())
    lines.append(f"  quality checks: {dropped} dropped (each cuts its conversation), {flagged} flagged")
    lines += [
        f"    {check}: {counts[DROPPED]} dropped, {counts[FLAGGED]} flagged" for check, counts in quality.items()
    ]
    lines.append(f"  report: {report['arguments']['output_dir']}/{REPORT_NAME}")
    return "\n".join(lines)

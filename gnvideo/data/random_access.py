"""How cheap a dataset's videos are to read at random clip positions: keyframe intervals and frames decoded per clip.

Read from the containers' headers and packet flags (:func:`gnvideo.data.decode.keyframes.keyframe_layout`), never by
decoding. ``gnvideo-check-videos --keyframes`` summarizes a whole dataset (:func:`summarize`); the DataModule samples
a few training files at setup (:func:`sample_keyframe_facts`) and warns once when their keyframes lie far apart
(:func:`warning_for`), naming the command that re-encodes them in place (:data:`REENCODE_COMMAND`).
"""

from __future__ import annotations

import math
import os
import random
import statistics
from collections import Counter
from collections.abc import Sequence

from .decode.errors import is_decoder_fault, problem_reason
from .decode.keyframes import encoder_settings, keyframe_layout
from .sampling import clip_span

#: re-encodes a dataset folder in place with keyframes one clip span apart (``data_prep/prepare_kinetics.py``)
REENCODE_COMMAND = "gnvideo-prepare-kinetics --reencode {root}"
#: a keyframe interval more than this many clip spans is "far above the clip span"
FAR_ABOVE_SPANS = 2.0
#: upper bounds (frames) of the keyframe-interval histogram; the last bucket is "above"
BUCKETS = (16, 32, 64, 128, 256)


def inspect_video(path: str, num_frames: int, sampling_rate: int, settings: bool = True) -> dict:
    """One video's keyframe facts: ``{"path", "frame_count", "max_interval", "keyframes", "frames_decoded",
    "encoder"}`` (``frames_decoded``: per training clip of ``num_frames`` x ``sampling_rate``, on average), or
    ``{"path", "problem"}`` when its header cannot be read. ``settings``: also read x264's settings from the file."""
    try:
        layout = keyframe_layout(path)
    except (OSError, ValueError) as err:
        return {"path": path, "problem": problem_reason(err)}
    facts = {"path": path, "frame_count": layout.frame_count, "max_interval": layout.max_interval,
             "keyframes": len(layout.keyframes),
             "frames_decoded": layout.mean_frames_decoded(num_frames, sampling_rate)}
    if settings:
        found = encoder_settings(path)
        facts["encoder"] = {k: found[k] for k in ("encoder", "keyint", "cabac", "bframes", "crf") if k in found}
    return facts


def _bucket(interval: int) -> str:
    for i, bound in enumerate(BUCKETS):
        if interval <= bound:
            return f"{BUCKETS[i - 1] + 1 if i else 1}-{bound}"
    return f">{BUCKETS[-1]}"


def summarize(facts: Sequence[dict], num_frames: int, sampling_rate: int) -> dict:
    """The dataset's keyframe summary from :func:`inspect_video` results.

    Returns:
        ``videos``, ``unreadable`` (count), ``clip`` (num_frames, sampling_rate, span), ``max_interval`` (longest
        keyframe interval per video: median, p90, max, and ``histogram``: videos per interval bucket, in frames),
        ``frames_decoded_per_clip`` (mean over videos of the frames a random training clip decodes) and its ratio
        to the frames a clip uses, ``encoders`` (videos per x264 keyint/cabac setting) and ``slow`` (whether the
        median interval is more than :data:`FAR_ABOVE_SPANS` clip spans).
    """
    good = [f for f in facts if "problem" not in f]
    span = clip_span(num_frames, sampling_rate)
    out: dict = {"videos": len(facts), "unreadable": len(facts) - len(good),
                 "clip": {"num_frames": num_frames, "sampling_rate": sampling_rate, "span": span}}
    if not good:
        return {**out, "slow": False}
    intervals = sorted(f["max_interval"] for f in good)
    counts = Counter(_bucket(i) for i in intervals)
    names = [_bucket(b) for b in BUCKETS] + [f">{BUCKETS[-1]}"]
    decoded = statistics.fmean(f["frames_decoded"] for f in good)
    encoders = Counter(_encoder_name(f.get("encoder")) for f in good)
    median = statistics.median(intervals)
    return {**out,
            "max_interval": {"median": median, "p90": intervals[max(0, math.ceil(0.9 * len(intervals)) - 1)],
                             "max": intervals[-1], "histogram": {n: counts.get(n, 0) for n in names}},
            "frames_decoded_per_clip": decoded, "decoded_per_frame_used": decoded / num_frames,
            "encoders": dict(encoders.most_common()), "slow": median > FAR_ABOVE_SPANS * span}


def _encoder_name(encoder: dict | None) -> str:
    if encoder is None:
        return "not read"
    if not encoder:
        return "not x264 (or no settings recorded)"
    return f"{encoder.get('encoder', 'x264')} keyint={encoder.get('keyint', '?')} cabac={encoder.get('cabac', '?')}"


def _inspect_job(job: tuple[str, int, int], progress) -> dict:
    return inspect_video(*job, settings=False)


def sample_keyframe_facts(paths: Sequence[str], num_frames: int, sampling_rate: int, count: int = 8, seed: int = 0,
                          timeout: float | None = None) -> tuple[list[dict], dict[str, str]]:
    """:func:`inspect_video` of ``count`` of ``paths`` drawn with ``seed`` (header reads only, ~0.1-5 ms a file),
    without x264's settings; and ``{path: reason}`` of those whose read crashed or hung.

    ``timeout`` (seconds): read them in an isolated worker process (:func:`gnvideo.data.decode.pool.isolated_map`),
    so that a file whose demuxer crashes or hangs costs this check one file, never the caller (a training run's
    main process); its reason is the decoders' ("decoder crashed: signal 11 (SIGSEGV)"). None: in this process."""
    existing = [p for p in paths if os.path.isfile(p)]
    picked = random.Random(seed).sample(existing, min(count, len(existing)))
    if timeout is None:
        return [inspect_video(p, num_frames, sampling_rate, settings=False) for p in picked], {}
    from .decode.pool import isolated_map

    facts: list[dict] = [{"path": p, "problem": "not read"} for p in picked]
    failed: dict[str, str] = {}
    jobs = [(p, num_frames, sampling_rate) for p in picked]
    for index, found, failure in isolated_map(_inspect_job, jobs, 1, timeout, quiet=True):
        if failure is not None and is_decoder_fault(failure):  # a Python error there is no verdict on the file
            failed[picked[index]] = failure
        facts[index] = found if failure is None else {"path": picked[index], "problem": failure}
    return facts, failed


def warning_for(facts: Sequence[dict], num_frames: int, sampling_rate: int, root: str) -> str | None:
    """The one-line warning for training videos whose keyframes lie far apart, from their :func:`inspect_video`
    facts, or None when they are fine or none could be read."""
    summary = summarize(facts, num_frames, sampling_rate)
    if not summary["slow"]:
        return None
    clip = f"{num_frames}x{sampling_rate}"
    return (f"training videos have a keyframe every {summary['max_interval']['median']:g} frames (median of "
            f"{len(facts) - summary['unreadable']} sampled), far above the {clip} clip span of "
            f"{summary['clip']['span']}: a random clip decodes ~{summary['frames_decoded_per_clip']:.0f} frames for "
            f"the {num_frames} it uses; re-encode them in place (resumable) with: {REENCODE_COMMAND.format(root=root)}")


def slow_access_warning(paths: Sequence[str], num_frames: int, sampling_rate: int, root: str, count: int = 8,
                        seed: int = 0, timeout: float | None = None) -> str | None:
    """:func:`warning_for` the files :func:`sample_keyframe_facts` draws."""
    facts, _ = sample_keyframe_facts(paths, num_frames, sampling_rate, count, seed, timeout)
    return warning_for(facts, num_frames, sampling_rate, root)


__all__ = ["BUCKETS", "FAR_ABOVE_SPANS", "REENCODE_COMMAND", "inspect_video", "sample_keyframe_facts",
           "slow_access_warning", "summarize", "warning_for"]

"""Long recordings built from RAVDESS test clips: ``--segmentation vad`` against ``windows``.

    python benchmarks/long_recordings.py [--files 24] [--extra-single 12] [--split test]

Builds recordings from the clips of one split only (``test``: actors 23-24, never trained on;
``validation``: actors 21-22, for tuning): 5-20 utterances separated by 0.3-5 s of background
(low white noise, or room tone: low-passed noise with a hum), the same background under the
speech. A third of the files hold one emotion throughout, a third change emotion, and the rest
are mostly silence (a minute or more of background around their utterances). Each utterance is
a clip cut to its speech by an energy rule independent of the VAD (frames within 35 dB of the
clip's loudest, 32 ms frames), so the truth is where each cut clip was placed.

Both modes then score the folder with ``ser-batch score`` as a fresh process (start-up
included), and the script prints, for each: utterance detection (precision and recall of the
true utterances at IoU >= 0.5, from the ``--segments`` rows), utterance-level accuracy (each
true utterance takes the label of the segment row that overlaps it most; none: wrong) beside
the clip-level accuracy of the same model on the same clips scored whole, file-level accuracy
on the single-emotion files, files per second and the real-time factor. Also the VAD's own
cost. The recordings are written to a temporary folder and removed (RAVDESS is CC BY-NC-SA).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import soundfile as sf
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import load_audio
from ser.batch.segmentation import Segmentation
from ser.corpus import read_ravdess, select
from ser.models import DEFAULT_MODEL
from ser.vad import SileroVad

from common import RAVDESS_16K, WHISPER_TINY, describe_machine

RATE = 16_000


@dataclass
class Recording:
    name: str
    kind: str  # single, changing, silent
    background: str = "noise"  # noise, room
    utterances: list[tuple[float, float, str, Path]] = field(default_factory=list)
    seconds: float = 0.0


def trim_to_speech(signal: np.ndarray, top_db: float = 35.0, frame: int = 512) -> np.ndarray:
    """The clip from its first to its last frame within ``top_db`` of its loudest frame."""
    frames = signal[: signal.size // frame * frame].reshape(-1, frame)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(level >= level.max() - top_db)
    return signal[loud[0] * frame : (loud[-1] + 1) * frame]


def background(samples: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Low white noise (about -60 dBFS) or room tone (low-passed noise and a 50 Hz hum)."""
    if kind == "noise":
        return (0.001 * rng.standard_normal(samples)).astype(np.float32)
    brown = lfilter([1.0], [1.0, -0.98], rng.standard_normal(samples)) * 0.0006
    hum = 0.0015 * np.sin(2 * np.pi * 50 * np.arange(samples) / RATE + rng.uniform(0, 6))
    return (brown + hum).astype(np.float32)


def with_pause(speech: np.ndarray, seconds: float, frame: int = 512) -> np.ndarray:
    """``speech`` with ``seconds`` of digital silence inserted at its quietest 32 ms frame in
    the middle 40% (a pause inside the sentence, the background is added over it later)."""
    frames = speech[: speech.size // frame * frame].reshape(-1, frame)
    first, last = int(0.3 * len(frames)), max(int(0.7 * len(frames)), int(0.3 * len(frames)) + 1)
    quietest = first + int(np.argmin((frames[first:last] ** 2).mean(axis=1)))
    at = quietest * frame + frame // 2
    return np.concatenate([speech[:at], np.zeros(round(seconds * RATE), np.float32), speech[at:]])


def build(
    clips, count: int, seed: int, folder: Path, *, quiet: bool = False, extra_single: int = 0,
    pauses: float = 0.0,
) -> list[Recording]:  # fmt: skip
    """Write ``count`` recordings into ``folder``, then ``extra_single`` more single-emotion
    ones (the first ``count`` do not change with it); return what each holds.

    ``quiet``: no background at all (digital silence between utterances), for ablations.
    ``pauses``: the chance that an utterance gets one pause of 0.3-1.0 s inside it
    (:func:`with_pause`), drawn from a stream of its own: 0 builds the recordings it always
    did; otherwise the first recording holds the same utterances, the later ones others (the
    background's draws follow the recording's length).
    """
    rng, pause_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    by_label: dict[str, list] = {}
    for clip in clips:
        by_label.setdefault(clip.label, []).append(clip)
    labels = sorted(by_label)
    cut = {clip.path: trim_to_speech(load_audio(clip.path)) for clip in clips}
    recordings = []
    for index in range(count + extra_single):
        kind = ("single", "changing", "silent")[index % 3] if index < count else "single"
        n = int(rng.integers(5, 21)) if kind != "silent" else int(rng.integers(5, 9))
        if kind == "single":
            label = labels[int(rng.integers(len(labels)))]
            chosen = [by_label[label][int(rng.integers(len(by_label[label])))] for _ in range(n)]
        else:
            chosen = [clips[int(rng.integers(len(clips)))] for _ in range(n)]
        lead = rng.uniform(30, 60) if kind == "silent" else rng.uniform(0.5, 2.0)
        parts, position = [np.zeros(int(lead * RATE), np.float32)], lead
        recording = Recording(f"rec{index:02d}-{kind}.wav", kind, ("noise", "room")[index % 2])
        for clip in chosen:
            speech = cut[clip.path] * np.float32(10 ** (rng.uniform(-3, 3) / 20))
            if pauses and pause_rng.random() < pauses:
                speech = with_pause(speech, pause_rng.uniform(0.3, 1.0))
            recording.utterances.append(
                (position, position + speech.size / RATE, clip.label, clip.path)
            )
            gap = rng.uniform(0.3, 5.0)
            parts += [speech, np.zeros(int(gap * RATE), np.float32)]
            position += speech.size / RATE + int(gap * RATE) / RATE
        if kind == "silent":
            parts.append(np.zeros(int(rng.uniform(30, 60) * RATE), np.float32))
        signal = np.concatenate(parts)
        noise = background(signal.size, recording.background, rng)
        signal = signal if quiet else signal + noise
        sf.write(folder / recording.name, signal, RATE, subtype="PCM_16")
        recording.seconds = signal.size / RATE
        recordings.append(recording)
    return recordings


def score(inputs: list[str], out: Path, model: str, *extra: str) -> tuple[float, Path, Path]:
    """``ser-batch score`` in a fresh process; wall time, report and segments file."""
    report, segments = out.with_suffix(".csv"), out.with_suffix(".segments.csv")
    command = [sys.executable, "-m", "ser.batch", "score", *inputs, "-o", str(report),
               "--segments", str(segments), "--model", model, *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"ser-batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, report, segments


def truth_rttm(recordings: list[Recording]) -> str:
    """A perfect diarization: each utterance a turn of its actor (RAVDESS's ``Actor_XX``)."""
    lines = []
    for recording in recordings:
        file_id = Path(recording.name).stem
        for start, end, _label, path in recording.utterances:
            actor = path.parent.name
            lines.append(f"SPEAKER {file_id} 1 {start:.3f} {end - start:.3f} <NA> <NA> {actor} "
                         "<NA> <NA>")  # fmt: skip
    return "\n".join(lines) + "\n"


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def claim_match(span: tuple[float, float], regions: list, used: set[int]) -> bool:
    """Whether a region not ``used`` yet overlaps ``span`` at IoU >= 0.5 (one region to one
    utterance); the best such region is added to ``used``."""
    overlaps = [iou(span, (region[0], region[1])) for region in regions]
    best = [i for i in np.argsort(overlaps)[::-1] if i not in used and overlaps[i] >= 0.5]
    if best:
        used.add(int(best[0]))
    return bool(best)


def cover(span: tuple[float, float], region: tuple) -> float:
    """How much of ``span`` the region ``(start, end, ...)`` covers, in their unit."""
    return max(0, min(span[1], region[1]) - max(span[0], region[0]))


def touching(span: tuple[float, float], regions: list) -> list:
    """The regions that cover any of ``span``, in order."""
    return [region for region in regions if cover(span, region) > 0]


def most_covering(span: tuple[float, float], regions: list) -> int | None:
    """The index of the region that covers most of ``span`` (None: no region touches it)."""
    covered = [cover(span, region) for region in regions]
    return int(np.argmax(covered)) if covered and max(covered) > 0 else None


def evaluate(recordings: list[Recording], report: Path, segments: Path) -> dict[str, float]:
    rows = {Path(row["path"]).name: row for row in csv.DictReader(report.open())}
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for row in csv.DictReader(segments.open()):
        spans.setdefault(Path(row["path"]).name, []).append(
            (float(row["start_s"]), float(row["end_s"]), row["label"])
        )
    matched = predicted = truths = correct = 0
    single_right = single = no_speech = 0
    for recording in recordings:
        found = spans.get(recording.name, [])
        predicted += len(found)
        truths += len(recording.utterances)
        used: set[int] = set()
        for start, end, label, _ in recording.utterances:
            matched += claim_match((start, end), found, used)
            owner = most_covering((start, end), found)
            if owner is not None:
                correct += found[owner][2] == label
        row = rows[recording.name]
        no_speech += row["status"] == "no_speech"
        if recording.kind == "single":
            single += 1
            single_right += row["label"] == recording.utterances[0][2]
    return {
        "precision": matched / max(predicted, 1),
        "recall": matched / max(truths, 1),
        "utterance_accuracy": correct / max(truths, 1),
        "file_accuracy_single": single_right / max(single, 1),
        "segments": predicted,
        "utterances": truths,
        "single_files": single,
        "no_speech_files": no_speech,
    }


def clip_accuracy(recordings: list[Recording], folder: Path, model: str) -> float:
    """The model's accuracy on the utterances' source clips, each scored whole."""
    paths = sorted({str(u[3]) for r in recordings for u in r.utterances})
    listing = folder / "clips.txt"
    listing.write_text("\n".join(paths) + "\n")
    _, report, _ = score(
        ["--files-from", str(listing)], folder / "clips", model, "--segmentation", "windows"
    )
    labels = {row["path"]: row["label"] for row in csv.DictReader(report.open())}
    hits = [labels[str(u[3])] == u[2] for r in recordings for u in r.utterances]
    return float(np.mean(hits))


def clip_accuracy_in_background(recordings: list[Recording], folder: Path, model: str) -> float:
    """The same, each source clip whole with its recording's background added: what the
    background alone costs the model, before any segmentation."""
    rng = np.random.default_rng(1)
    (folder / "noisy").mkdir()
    written: dict[tuple[str, str], Path] = {}
    for recording in recordings:
        for _, _, _, path in recording.utterances:
            key = (str(path), recording.background)
            if key not in written:
                signal = load_audio(path)
                signal = signal + background(signal.size, recording.background, rng)
                written[key] = folder / "noisy" / f"{len(written):04d}.wav"
                sf.write(written[key], signal, RATE, subtype="PCM_16")
    _, report, _ = score(
        [str(folder / "noisy")], folder / "noisy-clips", model, "--segmentation", "windows"
    )
    labels = {Path(row["path"]).name: row["label"] for row in csv.DictReader(report.open())}
    hits = [
        labels[written[(str(u[3]), r.background)].name] == u[2]
        for r in recordings
        for u in r.utterances
    ]
    return float(np.mean(hits))


def recording_options(
    split: str, *, probe: bool = False, splits: tuple[str, ...] = ("test", "validation")
) -> Callable[[Callable], Callable]:
    """The options every long-recording benchmark takes: corpus, split (one of ``splits``),
    recordings and model (``probe``: the frozen encoder the linear probes run on,
    ``--backbone``, instead)."""
    last = (
        click.option("--backbone", default=str(WHISPER_TINY), show_default=True)
        if probe
        else click.option("--model", default=DEFAULT_MODEL, show_default=True)
    )
    options = [
        click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K),
        click.option("--split", type=click.Choice(splits), default=split),
        click.option("--files", default=24, show_default=True),
        click.option("--seed", default=0, show_default=True),
        last,
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.command()
@recording_options(split="test")
@click.option(
    "--extra-single", default=0, show_default=True,
    help="More single-emotion files after the --files mix, for file-level accuracy.",
)  # fmt: skip
@click.option("--vad-threshold", default=None, type=float, help="Passed to the vad run.")
@click.option("--vad-min-silence", default=None, type=float, help="Passed to the vad run.")
@click.option("--vad-pad", default=None, type=float, help="Passed to the vad run.")
@click.option("--vad-context", default=None, type=float, help="Passed to the vad run.")
@click.option("--vad-refresh", default=None, type=float, help="Passed to the vad run.")
@click.option("--vad-sentence-pause", default=None, type=float, help="Passed to the vad run.")
@click.option(
    "--speaker-mode", is_flag=True,
    help="Also score with --segmentation vad in speaker mode, from an RTTM of the true actors.",
)  # fmt: skip
def main(
    data: Path, split: str, files: int, seed: int, model: str, extra_single: int,
    speaker_mode: bool, **vad_settings: float | None,
) -> None:  # fmt: skip
    clips = select(read_ravdess(data), split)
    with tempfile.TemporaryDirectory(prefix="ser-long-") as tmp:
        folder = Path(tmp) / "recordings"
        folder.mkdir()
        recordings = build(clips, files, seed, folder, extra_single=extra_single)
        files = len(recordings)
        audio_s = sum(r.seconds for r in recordings)
        kinds = Counter(r.kind for r in recordings)
        print(f"data: {data} split={split} ({len(clips)} clips); machine: {describe_machine()}")
        print(
            f"recordings: {files} ({dict(kinds)}), {audio_s / 60:.1f} min of audio, "
            f"{min(r.seconds for r in recordings):.0f}-{max(r.seconds for r in recordings):.0f} s "
            f"each, {sum(len(r.utterances) for r in recordings)} utterances; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        vad = SileroVad()
        refresh = Segmentation("vad", refresh_s=vad_settings["vad_refresh"] or 0.0).refresh_frames
        started = time.perf_counter()
        for recording in recordings:
            vad.probabilities(load_audio(folder / recording.name), refresh)
        vad_s = time.perf_counter() - started
        print(f"VAD alone (decode included): {vad_s:.2f} s, real-time factor {vad_s / audio_s:.4f}")
        clip_acc = clip_accuracy(recordings, Path(tmp), model)
        print(f"clip-level accuracy of {model} on the same utterances scored whole: {clip_acc:.3f}")
        noisy_acc = clip_accuracy_in_background(recordings, Path(tmp), model)
        print(f"the same, each clip whole with its recording's background added: {noisy_acc:.3f}")
        header = (
            "| segmentation | utterance precision | utterance recall | utterance accuracy | "
            "file accuracy, single-emotion | files/s | real-time factor | wall s |"
        )
        print(header)
        print("|---" * 8 + "|")
        modes = ("vad", "windows", *(("vad+speaker",) if speaker_mode else ()))
        for mode in modes:
            extra = ["--segmentation", mode.removesuffix("+speaker")]
            if mode == "vad+speaker":
                rttm = Path(tmp) / "actors.rttm"
                rttm.write_text(truth_rttm(recordings))
                extra += ["--speakers", str(rttm)]
            for name, value in vad_settings.items():  # --vad-threshold and the like
                if mode == "vad" and value is not None:
                    extra += ["--" + name.replace("_", "-"), str(value)]
            out = Path(tmp) / mode.replace("+", "-")
            wall, report, segments = score([str(folder)], out, model, *extra)
            m = evaluate(recordings, report, segments)
            print(
                f"| {mode} | {m['precision']:.3f} ({m['segments']} segments) | "
                f"{m['recall']:.3f} (of {m['utterances']}) | {m['utterance_accuracy']:.3f} | "
                f"{m['file_accuracy_single']:.3f} (of {m['single_files']}) | "
                f"{files / wall:.2f} | {wall / audio_s:.4f} | {wall:.1f} |",
                flush=True,
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

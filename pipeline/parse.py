"""Parsing new videos of any length with a trained run: events with their times.

The `parse-folder` chain (`avvp.pipeline.chain`; the `avvp parse` command and the
`parse-folder` flow) runs these steps:

1. `parse_extract_config`: the extractors, size and weights the run's features were
   made with, read from the provenance of the feature tables it was trained on. A store
   whose rows come from other settings is refused, naming both.
2. Extraction of the windows the parse's store lacks, into a store of the parse's own
   (never the training store), where each file's rows are keyed by its content: files
   of one name in two folders, or a file replaced by another of its name, never clash.
3. `parse_stored`: the model on every 10-s window of every video that is now stored,
   in chunks of whole videos so memory stays flat with the folder's size; per window
   the run's own protocol (threshold, video-level filter); then per video the windows'
   segments laid end to end and cut into events: runs of ones per modality and class,
   the audio-visual track where both are on. An event spanning a window boundary is
   one event; padded segments of a last window are off, so they never produce or
   extend an event; a video without an audio track gets no audio (nor audio-visual)
   events. An event's score is the mean segment probability over it (for audio-visual,
   the mean of the lower of the two probabilities).

Written to `out`, each file under a temporary name first:

- `events.parquet`, `events.csv`: one row per event: `video_id`, `path`, `modality`
  (audio, visual, audio-visual), `class`, `onset_s`, `offset_s`, `score`;
- `videos.csv`: one row per input file: `path`, `video_id`, `status` (ok, failed),
  `reason`, `duration_s`, `windows`, `has_audio`, `declared_duration_s` (what its
  header declares) and `cut_at_s` (where a file cut short of that ends); times to the
  millisecond;
- `timelines/<video_id>.png`: the audio and visual events over the video's time (two
  files of one id, from two folders, get the start of their content id appended);
- `index.html`: the viewer, one self-contained page to watch each video beside its
  events and see why files failed (`reports/viewer.py`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from ..contract import SEGMENT_SECONDS, SEGMENTS_PER_WINDOW
from ..model.classes import LLP_CLASSES
from ..model.events import segment_events
from ..model.metrics import binarize_predictions
from ..storage import FeatureStore, Keys, open_run
from ..storage.atomic import atomic_write
from ..storage.failures import FailureLog
from ..storage.videos import VideoManifest, VideoRecord
from . import catalog
from .dataset import load_window_features
from .embedding import configured_provenance, table_of_extractor
from .extract import STAGE, ExtractConfig, counted
from .infer import LoadedRun, predict_loaded
from .reports.plots import MODALITIES, TimelineEvent, plot_timeline
from .reports.viewer import write_viewer
from .sources.decode import CUT_SHORT_TOLERANCE_S
from .sources.llp import llp_video_ids
from .sources.videos import KeyedVideo, keyed_videos
from .train_config import TrainConfig

EVENT_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("modality", pa.string()),
        ("class", pa.string()),
        ("onset_s", pa.float64()),
        ("offset_s", pa.float64()),
        ("score", pa.float64()),
    ]
)
VIDEO_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("video_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("duration_s", pa.float64()),
        ("windows", pa.int32()),
        ("has_audio", pa.bool_()),
        ("declared_duration_s", pa.float64()),
        ("cut_at_s", pa.float64()),
    ]
)
# Times are written to the millisecond: decoders give float noise (34.999999046 s).
TIME_DECIMALS = 3


class ParseConfig(BaseModel):
    """How to parse: the protocol's threshold, where to run, extraction settings."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1, description="segment and video threshold")
    device: str = "auto"
    batch_windows: int = Field(256, ge=1, description="windows per model call")
    chunk_windows: int = Field(4096, ge=1, description="windows read into memory at once")
    weights: dict[str, str] = Field(
        default_factory=dict, description="extractor -> weight file (default: its cache)"
    )
    extract: dict[str, object] = Field(
        default_factory=dict,
        description="other ExtractConfig settings (batch_size, workers, shard_videos, ...)",
    )
    labels: str | None = Field(None, description="LLP-format folder naming LLP files' ids")
    timelines: bool = True


class ParsedVideo(BaseModel):
    """One input file's row of videos.csv."""

    path: str
    video_id: str
    key: str = ""  # the content id its rows are stored under in the parse's store
    status: str  # ok | failed
    reason: str = ""
    duration_s: float | None = None
    windows: int = 0
    has_audio: bool | None = None
    declared_duration_s: float | None = None  # what its header declares, when it does
    cut_at_s: float | None = None  # where a file cut short of that ends (its duration)
    events: int = 0


class ParseResult(BaseModel):
    """What a parse wrote (JSON-serialisable)."""

    out: str
    run: str
    videos: list[ParsedVideo]
    events: dict[str, int]  # modality -> events
    files: list[str]  # written, relative to `out`

    @property
    def failed(self) -> list[ParsedVideo]:
        return [video for video in self.videos if video.status != "ok"]


def parse_extract_config(loaded: LoadedRun, config: ParseConfig) -> ExtractConfig:
    """The extraction settings of the run's features, checked against them."""
    extractor_of = {f.table: name for name, f in catalog.extracted_sets().items()}
    data = loaded.config.data
    tables = [data.audio_table, data.visual_table, data.visual_st_table]
    store = FeatureStore(loaded.root)
    provenances = {table: store.table(table).provenance for table in tables}
    names, sizes = [], set()
    for table, provenance in provenances.items():
        if table not in extractor_of or provenance is None:
            raise ValueError(
                f"the run {loaded.run.url} was trained on the table {table!r}, which avvp "
                "does not extract from videos: parse needs a run trained on extracted "
                f"features ({', '.join(extractor_of)})"
            )
        if provenance.source != extractor_of[table]:
            raise ValueError(
                f"the run {loaded.run.url} was trained on {table} rows of "
                f"{provenance.source!r} (e.g. a released feature set), which videos cannot "
                f"be extracted to; parse needs a run trained on features of avvp extract"
            )
        names.append(extractor_of[table])
        sizes.add(provenance.extras.get("preset", "paper"))  # the stored key of the size
    dtype = provenances[tables[0]].dtype or "float16"
    extract = ExtractConfig.model_validate(
        {
            "extractors": names,
            "size": sizes.pop() if len(sizes) == 1 else "paper",
            "weights": config.weights,
            "device": config.device,
            "labels": config.labels,
            "dtype": dtype,
            **config.extract,
        }
    )
    for name, provenance in configured_provenance(extract, extract.dtype or dtype).items():
        table = table_of_extractor(name)
        differences = provenances[table].differences(provenance)
        if differences:
            raise ValueError(
                f"the run was trained on {table} features of other settings than these "
                f"extractors give (run's != now): {'; '.join(differences)}. Give the "
                "weight files the run's features were made with (--weights NAME=PATH)"
            )
    return extract


def parse_keyed_videos(
    paths: Sequence[str | Path], root: str, config: ParseConfig
) -> list[KeyedVideo]:
    """The files of `paths`, each with its id and the content id its rows are stored
    under in the parse's store."""
    known = llp_video_ids(config.labels)
    return keyed_videos(paths, VideoManifest(root).read(), known, by_content=True)


def parse_inputs(
    paths: Sequence[str | Path], run_url: str, root: str, config: ParseConfig
) -> dict[str, object]:
    """What `parse_stored` reads, as digests: the run's checkpoint, the files and their
    content ids, the fingerprints of their stored rows and their recorded failures."""
    _, run = open_run(run_url)
    data = TrainConfig.model_validate(run.read_json("config.json")["train"]).data
    videos = parse_keyed_videos(paths, root, config)
    keys = sorted({video.key for video in videos})
    store = FeatureStore(root)
    failing = FailureLog(root).read(STAGE).to_pydict()
    reasons = dict(zip(failing["path"], failing["reason"], strict=True))
    return {
        "checkpoint": hashlib.sha256(run.read_bytes("checkpoint.pt")).hexdigest(),
        "files": [(str(video.path), video.video_id, video.key) for video in videos],
        "rows": {
            table: store.table(table).fingerprint(keys)
            for table in (data.audio_table, data.visual_table, data.visual_st_table)
        },
        "failures": {str(video.path): reasons.get(str(video.path), "") for video in videos},
    }


def parse_stored(
    paths: Sequence[str | Path],
    loaded: LoadedRun,
    root: str,
    out: str | Path,
    config: ParseConfig | None = None,
) -> ParseResult:
    """Parse the input files whose windows are stored in the parse's store `root`
    (keyed by content, as its extraction keyed them); every other file is a failed row
    with the reason the extraction recorded. Each row shows the file's own id
    (`config.labels` names LLP files)."""
    config = config or ParseConfig()
    inputs = parse_keyed_videos(paths, root, config)
    manifest = VideoManifest(root).read()
    failing = FailureLog(root).read(STAGE).to_pydict()
    reasons = dict(zip(failing["path"], failing["reason"], strict=True))
    # One store for the whole parse, so each table's key index is built once.
    store = FeatureStore(root)
    stored = _stored_windows(store, loaded, sorted({video.key for video in inputs}))
    rows: list[ParsedVideo] = []
    for video in inputs:
        record = manifest.get(video.key)
        windows = stored.get(video.key, 0)
        # A file failing now failed; else its content's windows are stored.
        if str(video.path) not in reasons and record is not None and windows == record.windows:
            rows.append(
                ParsedVideo(
                    path=str(video.path),
                    video_id=video.video_id,
                    key=video.key,
                    status="ok",
                    windows=windows,
                    has_audio=record.has_audio,
                    **_durations(record),
                )
            )
        else:
            reason = reasons.get(str(video.path), "its windows are not in the store")
            rows.append(
                ParsedVideo(
                    path=str(video.path),
                    video_id=video.video_id,
                    key=video.key,
                    status="failed",
                    reason=reason,
                )
            )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, object]] = []
    files = []
    by_key: dict[str, list[ParsedVideo]] = {}
    for row in rows:
        if row.status == "ok":
            by_key.setdefault(row.key, []).append(row)
    names = Counter(row.video_id for row in rows)
    for key, key_events in _video_events(loaded, store, list(by_key), config):
        for row in by_key[key]:
            video_events = [dict(event) for event in key_events]
            if row.duration_s is not None:  # a last, partial segment ends with the video
                for event in video_events:
                    event["offset_s"] = min(event["offset_s"], row.duration_s)
            for event in video_events:
                event["score"] = round(event["score"], 4)
            row.events = len(video_events)
            events += [
                {"video_id": row.video_id, "path": row.path, **event} for event in video_events
            ]
            if config.timelines:
                name = row.video_id if names[row.video_id] == 1 else f"{row.video_id}-{key[:8]}"
                files.append(_timeline(out, row, name, video_events))
    table = pa.Table.from_pylist(events, schema=EVENT_SCHEMA)
    atomic_write(out / "events.parquet", lambda path: pq.write_table(table, path))
    atomic_write(out / "events.csv", lambda path: pacsv.write_csv(table, path))
    videos = pa.Table.from_pylist(
        [row.model_dump(exclude={"events", "key"}) for row in rows], schema=VIDEO_SCHEMA
    )
    atomic_write(out / "videos.csv", lambda path: pacsv.write_csv(videos, path))
    viewer = write_viewer(
        out,
        [row.model_dump(exclude={"key"}) for row in rows],
        events,
        run=loaded.run.url,
    )
    counts = {modality: sum(e["modality"] == modality for e in events) for modality in MODALITIES}
    return ParseResult(
        out=str(out),
        run=loaded.run.url,
        videos=rows,
        events=counts,
        files=["events.parquet", "events.csv", "videos.csv", viewer, *files],
    )


def _durations(record: VideoRecord) -> dict[str, float | None]:
    """A stored video's duration, its header's, and where it ends when cut short of it."""

    def rounded(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds, TIME_DECIMALS)

    declared = record.declared_duration
    cut = (
        record.duration is not None
        and declared is not None
        and record.duration < declared - CUT_SHORT_TOLERANCE_S
    )
    return {
        "duration_s": rounded(record.duration),
        "declared_duration_s": rounded(declared),
        "cut_at_s": rounded(record.duration) if cut else None,
    }


def _stored_windows(store: FeatureStore, loaded: LoadedRun, video_ids: list[str]) -> dict[str, int]:
    """Windows of each of `video_ids` present in every table the run reads."""
    data = loaded.config.data
    per_table = [
        store.table(table).stored_windows(video_ids)
        for table in (data.audio_table, data.visual_table, data.visual_st_table)
    ]
    return {
        video_id: len(set.intersection(*(table.get(video_id, set()) for table in per_table)))
        for video_id in per_table[0]
    }


def _video_events(
    loaded: LoadedRun, store: FeatureStore, video_ids: list[str], config: ParseConfig
) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """(video id, its events) for every video. Features are read `chunk_windows` at a
    time, whatever the videos' lengths; a video's events are cut once its last window
    is in (what is kept per window until then is its 2 x 10 x 25 on/off and scores)."""
    if not video_ids:
        return
    keys = store.table(loaded.config.data.audio_table).table.keys_of_videos(video_ids)
    rule = loaded.config.filter_resolved()
    pending: dict[str, list[tuple[np.ndarray, np.ndarray, int, bool]]] = {}
    for start in range(0, len(keys), config.chunk_windows):
        chunk = keys[start : start + config.chunk_windows]
        outputs, valid_segments, has_audio = _predict_chunk(loaded, store, chunk, config)
        on = binarize_predictions(
            outputs["frame_prob"],
            outputs["global_prob"],
            outputs["v_prob"],
            rule,
            threshold=config.threshold,
        )  # (W, 2, T, K)
        prob = outputs["frame_prob"].transpose(0, 2, 1, 3)  # (W, 2, T, K)
        for row, video_id in enumerate(chunk.video_ids.tolist()):
            if pending and video_id not in pending:
                yield from _finish(pending)
            window = (on[row], prob[row], valid_segments[row], has_audio[row])
            pending.setdefault(video_id, []).append(window)
    yield from _finish(pending)


def _predict_chunk(
    loaded: LoadedRun, store: FeatureStore, chunk: Keys, config: ParseConfig
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The run's outputs for `chunk` (as `predict_windows` gives them), and its windows'
    valid segments and has_audio, read with the features. A function of its own so the
    chunk's device tensors are freed before the next chunk is read."""
    features = load_window_features(store, loaded.config.data, chunk, loaded.device)
    outputs = predict_loaded(loaded, features, config.batch_windows)
    return outputs, features.valid_segments.cpu().numpy(), features.has_audio.cpu().numpy()


def _finish(
    pending: dict[str, list[tuple[np.ndarray, np.ndarray, int, bool]]],
) -> Iterator[tuple[str, list[dict[str, object]]]]:
    for video_id, windows in pending.items():
        on, prob, valid, has_audio = (np.stack(column) for column in zip(*windows, strict=True))
        yield video_id, video_events(on, prob, valid, bool(has_audio.all()))
    pending.clear()


def video_events(
    on: np.ndarray, prob: np.ndarray, valid_segments: np.ndarray, has_audio: bool
) -> list[dict[str, object]]:
    """One video's events from its windows in order: on/off and segment probabilities
    (W, 2, T, K) as the protocol gives them, valid segments per window (W,).

    The windows' segments are laid end to end, so a run crossing a window boundary is
    one event; padded segments are off, so they neither start nor extend one; without
    an audio track the audio (and so the audio-visual) track is empty.
    """
    windows, _, segments, classes = on.shape
    valid = np.arange(segments)[None, :] < np.asarray(valid_segments)[:, None]  # (W, T)
    on = on.astype(bool) & valid[:, None, :, None]
    if not has_audio:
        on[:, 0] = False
    # (2, W * T, K): the video's segments in time order.
    on = on.transpose(1, 0, 2, 3).reshape(2, windows * segments, classes)
    prob = prob.transpose(1, 0, 2, 3).reshape(2, windows * segments, classes)
    tracks = np.stack([on[0], on[1], on[0] & on[1]])  # audio, visual, audio-visual
    scores = np.stack([prob[0], prob[1], np.minimum(prob[0], prob[1])])
    found = segment_events(tracks.transpose(0, 2, 1))  # rows: (modality, class)
    events = []
    for modality, k, onset, offset in zip(*found.index, found.onset, found.offset, strict=True):
        events.append(
            {
                "modality": MODALITIES[modality],
                "class": LLP_CLASSES[k],
                "onset_s": float(onset * SEGMENT_SECONDS),
                "offset_s": float(offset * SEGMENT_SECONDS),
                "score": float(scores[modality, onset:offset, k].mean()),
            }
        )
    return events


def _timeline(
    out: Path, video: ParsedVideo, file_name: str, events: list[dict[str, object]]
) -> str:
    duration = video.duration_s or video.windows * SEGMENTS_PER_WINDOW * SEGMENT_SECONDS
    # A file cut short is drawn over the duration its header declares.
    shown = video.declared_duration_s if video.cut_at_s is not None else None
    name = f"timelines/{file_name}.png"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    plot_timeline(
        out / name,
        shown or duration,
        [
            # Offsets are already within the video: parse_stored clips them to its
            # duration, and without one they end with its last window.
            TimelineEvent(e["modality"], e["class"], e["onset_s"], e["offset_s"], e["score"])
            for e in events
        ],
        title=f"{video.video_id} ({duration:.1f} s, {counted(video.windows, 'window')})",
        has_audio=video.has_audio is not False,
        cut_at_s=video.cut_at_s,
    )
    return name

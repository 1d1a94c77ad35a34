"""The page of `avvp parse`: `OUT/index.html`, one self-contained file that opens from
disk (no server, nothing fetched) to watch each parsed video beside its events.

The page lists every input file (failed ones with their reasons) and shows the selected
video in an HTML5 player above its audio, visual and audio-visual tracks: one row per
class, each event a bar that seeks the player to its onset, a cursor that follows
playback, filters by class and modality. The data goes into the page as JSON, which
`viewer.js` reads and turns into elements with `textContent` only, so no file or class
name is ever parsed as HTML; `viewer.css` styles it. Both are inlined when the page is
written.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

from ...storage.atomic import atomic_write_bytes
from .plots import MODALITIES

PAGE = "index.html"
_VIDEO_FIELDS = (
    *("path", "video_id", "status", "reason", "duration_s", "windows", "has_audio"),
    *("declared_duration_s", "cut_at_s"),  # rows may lack them: null in the page
)
_EVENT_FIELDS = ("modality", "class", "onset_s", "offset_s", "score")


def write_viewer(
    out: str | Path,
    videos: Sequence[Mapping[str, object]],
    events: Sequence[Mapping[str, object]],
    run: str | None = None,
) -> str:
    """Write `out/index.html` for the rows of videos.csv and of events.csv; return its
    name. A row may carry `cut_at_s`, where a file cut short stops decoding, and
    `declared_duration_s`, how long its header says it is: its tracks then span that
    length, the part past the cut hatched."""
    out = Path(out)
    by_path: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_path.setdefault(str(event["path"]), []).append(
            {field: event[field] for field in _EVENT_FIELDS}
        )
    data = {
        "videos": [
            {
                **{field: video.get(field) for field in _VIDEO_FIELDS},
                "src": video_src(out, str(video["path"])),
                "events": by_path.get(str(video["path"]), []),
            }
            for video in videos
        ]
    }
    page = _page(data, _summary(videos, events, run))
    atomic_write_bytes(out / PAGE, page.encode("utf-8"))
    return PAGE


def video_src(out: Path, path: str) -> str:
    """The URL of the file at `path` from a page in `out`: relative, so the folder of
    outputs and the videos can move together; a file:// URI where no relative path
    exists (another drive on Windows)."""
    target = Path(path).resolve()
    try:
        relative = os.path.relpath(target, out.resolve())
    except ValueError:
        return target.as_uri()
    return "/".join(quote(part, safe="") for part in Path(relative).parts)


def embed_json(data: object) -> str:
    """`data` as JSON safe inside a <script> element: with every `<` escaped, no name
    can close the element (`</script>`) or open a comment in it."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def _summary(
    videos: Sequence[Mapping[str, object]],
    events: Sequence[Mapping[str, object]],
    run: str | None,
) -> str:
    parsed = sum(video["status"] == "ok" for video in videos)
    counts = ", ".join(
        f"{modality} {sum(event['modality'] == modality for event in events)}"
        for modality in MODALITIES
    )
    text = f"{len(videos)} files: {parsed} parsed, {len(videos) - parsed} failed. Events: {counts}."
    if run:
        text += f" Run: {run}"
    return html.escape(text)


def _asset(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def _page(data: object, summary: str) -> str:
    checkboxes = "".join(
        f'<label><input type="checkbox" name="modality" value="{modality}" checked> '
        f"{modality}</label>"
        for modality in MODALITIES
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>avvp parse</title>
<style>
{_asset("viewer.css")}
</style>
</head>
<body>
<header>
<h1>Parsed videos</h1>
<p id="summary">{summary}</p>
</header>
<main>
<nav>
<h2>Files</h2>
<ul id="videos"></ul>
</nav>
<section id="detail">
<h2 id="title">No video was parsed</h2>
<video id="player" controls preload="metadata" hidden></video>
<form id="filters">
<label>Class <select id="class-filter"><option value="">all classes</option></select></label>
{checkboxes}
</form>
<div id="tracks"></div>
</section>
</main>
<script type="application/json" id="avvp-data">{embed_json(data)}</script>
<script>
{_asset("viewer.js")}
</script>
</body>
</html>
"""

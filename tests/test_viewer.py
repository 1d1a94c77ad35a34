"""The viewer of `avvp parse` (OUT/index.html): its data cannot break out of the page, and
in headless Chromium it lists every file, seeks the player to each clicked event, shows
why files failed and which have no audio, and filters the tracks."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avvp.model.classes import CLASS_INDEX
from avvp.pipeline.chain import PARSE_FOLDER, ParseFolderConfig, ParseFolderSummary, run_local
from avvp.pipeline.reports.viewer import video_src, write_viewer
from avvp.pipeline.sources.dense_events import PLANTED_EVENTS_FILE
from avvp.pipeline.synthetic.clips import PlantedEvent, encode_clip, render_audio, render_frames

HOSTILE = "x</script><script>document.title='owned'</script> & 'y'.mp4"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def embedded_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="avvp-data">(.*?)</script>', page, re.S)
    assert found, "no embedded data"
    return json.loads(found.group(1))


def test_a_file_name_holding_a_script_end_tag_stays_data_inside_the_page(tmp_path: Path) -> None:
    video = {"path": f"/videos/{HOSTILE}", "video_id": HOSTILE[:-4], "status": "ok"}
    video |= {"reason": "", "duration_s": 10.0, "windows": 1, "has_audio": True}
    event = {"video_id": video["video_id"], "path": video["path"], "modality": "audio"}
    event |= {"class": "Dog</script>", "onset_s": 1.0, "offset_s": 3.0, "score": 0.8}
    assert write_viewer(tmp_path, [video], [event]) == "index.html"
    page = (tmp_path / "index.html").read_text()
    # The two script elements of the page (its data, its code) and no third.
    assert page.count("</script>") == 2 and page.count("<script") == 2
    data = embedded_data(page)
    assert data["videos"][0]["path"] == video["path"]
    assert data["videos"][0]["cut_at_s"] is None  # absent from the row: not known
    assert data["videos"][0]["events"][0]["class"] == "Dog</script>"


def test_video_sources_are_relative_urls_with_each_segment_percent_encoded(tmp_path: Path) -> None:
    out = tmp_path / "parsed"
    assert video_src(out, str(tmp_path / "my videos" / "a#1?.mp4")) == "../my%20videos/a%231%3F.mp4"
    assert video_src(out, str(out / "in<side>.mkv")) == "in%3Cside%3E.mkv"


def parse_folder(folder: Path, run: str, out: Path) -> ParseFolderSummary:
    """The parse-folder chain, as `avvp parse` runs it."""
    params = ParseFolderConfig(
        videos=[str(folder)], run=run, out=str(out), config={"device": "cpu"}
    )
    return run_local(PARSE_FOLDER, params)


def write_folder(folder: Path, classes: list[int]) -> None:
    """Clips of the demo's classes (a 12-s one, one of a hostile name, a silent one, one
    cut short) and two files that fail."""
    a, b, c = classes[:3]
    rng = np.random.default_rng(7)
    for path, seconds, events, sound in (
        (
            folder / "street.mp4",
            12.0,
            [PlantedEvent(a, "audio", 1, 6), PlantedEvent(a, "visual", 3, 8)]
            + [PlantedEvent(b, "visual", 6, 11)],
            True,
        ),
        (
            # A folder named `odd<` makes the path hold `</script>`, then markup.
            folder / "odd<" / "script><img src=x onerror=\"document.title='owned'\"> #1.mp4",
            10.0,
            [PlantedEvent(c, "audio", 2, 7), PlantedEvent(b, "visual", 0, 5)],
            True,
        ),
        (folder / "silent.mp4", 10.0, [PlantedEvent(b, "visual", 2, 9)], False),
    ):
        path.parent.mkdir(exist_ok=True)
        audio = render_audio(events, seconds, rng) if sound else None
        encode_clip(path, render_frames(events, seconds), audio=audio)
    whole = encode_clip(
        folder.parent / "whole.mkv", render_frames([PlantedEvent(a, "visual", 1, 8)], 10.0)
    )
    (folder / "cut.mkv").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are my notes, not a video\n" * 50)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's executable: the system's Chromium (Debian's package), not one
    that `playwright install` downloads."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no chromium or chrome executable on PATH")


def track_span(row: dict[str, str]) -> float:
    """The seconds a video's tracks span: a cut file's declared length."""
    if row.get("cut_at_s"):
        return max(float(row["duration_s"]), float(row["declared_duration_s"]))
    return float(row["duration_s"])


@contextmanager
def opened(chromium: str, page_file: Path) -> Iterator[tuple[Any, list[str]]]:
    """The page in headless Chromium, and the errors it logs or throws meanwhile."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            # As root no sandbox; the page plays its video from disk without a click.
            args=["--no-sandbox", "--allow-file-access-from-files"]
            + ["--autoplay-policy=no-user-gesture-required"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            yield page, errors
        finally:
            browser.close()


def test_the_part_of_a_cut_file_past_where_it_stops_decoding_is_hatched(
    chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    common = {"status": "ok", "reason": "", "windows": 1, "has_audio": True}
    rows = [
        # Cut at 6 s of the 10 its header declares; the other row knows nothing of cuts.
        {"path": str(tmp_path / "cut.mp4"), "video_id": "cut", "duration_s": 6.0}
        | {"declared_duration_s": 10.0, "cut_at_s": 6.0, **common},
        {"path": str(tmp_path / "whole.mp4"), "video_id": "whole", "duration_s": 10.0, **common},
    ]
    events = [
        {"path": row["path"], "video_id": row["video_id"], "modality": "visual", "class": "Dog"}
        | {"onset_s": 1.0, "offset_s": 4.0, "score": 0.9}
        for row in rows
    ]
    write_viewer(tmp_path, rows, events)
    with opened(chromium, tmp_path / "index.html") as (page, _):
        expect(page.locator("#title")).to_have_text("cut (cut at 6.0 s of 10.0 s)")
        hatches = page.locator("#tracks .cut")
        # Every lane: the axis, the visual class's row, the empty audio and audio-visual.
        expect(page.locator("#tracks .lane")).to_have_count(4)
        expect(hatches).to_have_count(4)
        for hatch in hatches.all():
            assert (
                hatch.get_attribute("title") == "the file is cut at 6.0 s: nothing decodes past it"
            )
            box, lane = hatch.bounding_box(), hatch.locator("xpath=..").bounding_box()
            assert box["x"] == pytest.approx(lane["x"] + 0.6 * lane["width"], abs=1)
            assert box["x"] + box["width"] == pytest.approx(lane["x"] + lane["width"], abs=1)
        page.locator("#videos button.name", has_text="whole").click()
        expect(page.locator("#tracks .event")).to_have_count(1)
        expect(hatches).to_have_count(0)


PLAYER = "document.getElementById('player')"
CURSOR_AT = "+document.querySelector('#tracks .cursor').style.getPropertyValue('--at')"


@pytest.mark.slow
def test_the_parse_viewer_lists_every_file_and_a_click_on_an_event_seeks_the_player_to_it(
    chromium: str, clips_demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect

    def say(line: str) -> None:
        with capsys.disabled():  # into CI's log, whatever pytest's capture
            print(f"\n[viewer] {line}")

    root, demo = clips_demo
    with (root / "clips" / PLANTED_EVENTS_FILE).open() as stream:
        names = sorted({row["event_labels"] for row in csv.DictReader(stream, delimiter="\t")})
    folder, out = tmp_path / "videos", tmp_path / "parsed"
    folder.mkdir()
    write_folder(folder, [CLASS_INDEX[name] for name in names])
    # Three of the demo's own test clips, which the run learned to parse.
    with (root / "clips" / "AVVP_test_pd.csv").open() as stream:
        tests = [row["filename"] for row in csv.DictReader(stream, delimiter="\t")][:3]
    for name in tests:
        clip = name.rsplit("_", 2)[0] + ".mp4"  # synclip0004_0_10 -> synclip0004.mp4
        shutil.copy(root / "clips" / "videos" / clip, folder / clip)
    summary = parse_folder(folder, demo.runs["MM-CSE"], out)
    assert "index.html" in summary.parse.files
    videos = read_csv(out / "videos.csv")
    events = read_csv(out / "events.csv")
    by_id = {row["video_id"]: row for row in videos}
    assert {row["status"] for row in videos} == {"ok", "failed"}

    with opened(chromium, out / "index.html") as (page, errors):
        # (b) Every input file is listed, once, with its status; the first ok one is selected.
        items = page.locator("#videos li")
        expect(items).to_have_count(len(videos))
        listed = [item.locator(".name").text_content() for item in items.all()]
        assert sorted(listed) == sorted(by_id)
        assert [by_id[name]["status"] for name in listed] == [
            item.get_attribute("data-status") for item in items.all()
        ]
        first_ok = next(name for name in listed if by_id[name]["status"] == "ok")
        expect(page.locator("#videos li.selected .name")).to_have_text(first_ok)
        assert page.title() == "avvp parse"  # the hostile name's script never ran

        # (d) A failed file shows its reason.
        reasons = {row["video_id"]: row["reason"] for row in videos if row["status"] == "failed"}
        assert "empty file" in reasons["empty"] and "not a media file" in reasons["notes"]
        for name, reason in reasons.items():
            item = items.filter(has=page.get_by_text(name, exact=True))
            expect(item.locator(".reason")).to_have_text(reason)

        # (c) A click on each event bar of each ok video sets the player's time to its
        # onset and moves the cursor there; a file cut short is hatched past the cut.
        clicked, videos_clicked = 0, 0
        for name in (n for n in listed if by_id[n]["status"] == "ok"):
            page.locator("#videos button.name", has_text=name).click()
            expect(page.locator("#title")).to_contain_text(name)
            bars = page.locator("#tracks .event")
            expected = [e for e in events if e["video_id"] == name]
            expect(bars).to_have_count(len(expected))
            cut = by_id[name].get("cut_at_s")
            expect(page.locator("#tracks .cut")).to_have_count(
                page.locator("#tracks .lane").count() if cut else 0
            )
            if cut:
                title = page.locator("#tracks .cut").first.get_attribute("title")
                shown = re.fullmatch(
                    r"the file is cut at ([\d.]+) s: nothing decodes past it", title
                )
                assert shown and float(shown[1]) == pytest.approx(float(cut), abs=0.051), title
            span = track_span(by_id[name])
            for bar in bars.all():
                onset = float(bar.get_attribute("data-onset"))
                # Onsets are whole seconds: the player starts elsewhere, so a click that
                # did nothing is seen.
                page.evaluate(f"{PLAYER}.currentTime = 0.37")
                bar.click()
                assert page.evaluate(f"{PLAYER}.currentTime") == pytest.approx(onset, abs=0.05)
                assert page.evaluate(CURSOR_AT) == pytest.approx(onset / span, abs=1e-3)
                clicked += 1
            videos_clicked += bool(expected)
        say(f"clicked {clicked} events")
        assert clicked == len(events) > 0 and videos_clicked >= 2

        # (e) The silent clip has no audio track; a clip with sound has one.
        page.locator("#videos button.name", has_text="silent").click()
        audio_track = page.locator('#tracks section[data-modality="audio"]')
        expect(audio_track).to_contain_text("no audio track")
        page.locator("#videos button.name", has_text="street").click()
        expect(audio_track).not_to_contain_text("no audio track")

        # (f) The class and modality filters hide and show bars.
        bars = page.locator("#tracks .event")
        mine = [e for e in events if e["video_id"] == "street"]
        assert mine, "the parse found no event in street.mp4"
        shown_class = mine[0]["class"]
        page.select_option("#class-filter", shown_class)
        expect(bars).to_have_count(sum(e["class"] == shown_class for e in mine))
        assert {bar.get_attribute("data-class") for bar in bars.all()} == {shown_class}
        page.select_option("#class-filter", "")
        page.uncheck("input[name=modality][value=visual]")
        expect(bars).to_have_count(sum(e["modality"] != "visual" for e in mine))
        assert "visual" not in {bar.get_attribute("data-modality") for bar in bars.all()}
        page.check("input[name=modality][value=visual]")
        expect(bars).to_have_count(len(mine))

        # Whether this browser decodes the whole MP4 clips (H.264 and AAC): then each
        # loads from its relative, percent-encoded URL and the cursor follows playback.
        h264 = page.evaluate(f"{PLAYER}.canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")
        played = {}
        whole = [n for n in listed if by_id[n]["status"] == "ok" and n != "cut"]
        for name in whole:
            page.locator("#videos button.name", has_text=name).click()
            played[name] = page.evaluate(
                f"""async () => {{
                const player = {PLAYER};
                player.muted = true;
                await player.play();
                await new Promise(r => setTimeout(r, 1500));
                player.pause();
                return {{width: player.videoWidth, time: player.currentTime,
                         duration: player.duration, at: {CURSOR_AT}}};
                }}"""
            )
        say(f"canPlayType H.264: {h264!r}; played: {played}")
        if h264 == "probably":
            for name, state in played.items():
                assert state["width"] == 64, (name, state)
                assert state["duration"] == pytest.approx(float(by_id[name]["duration_s"]), abs=0.1)
                assert state["time"] > 0.5 and state["at"] == pytest.approx(
                    state["time"] / state["duration"], abs=0.05
                ), (name, state)

        # (g) A picture of the page, a demo test clip selected.
        page.locator("#videos button.name", has_text=tests[0].rsplit("_", 2)[0]).click()
        shot = tmp_path / "viewer.png"
        page.screenshot(path=str(shot), full_page=True)
        say(f"screenshot: {shot}")
    # (a) Nothing went wrong in the page, from loading to the last click.
    assert errors == []
    assert shot.stat().st_size > 10_000

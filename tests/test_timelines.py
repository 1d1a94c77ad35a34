"""Timelines a person can read: a legend of every mark, each event's score on its bar,
"no audio track" for a video without one, and the part a cut file lacks hatched."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from avvp.pipeline.reports.plots import TimelineEvent, plot_timeline, timeline_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def texts(figure: Figure) -> list[str]:
    return [text.get_text() for ax in figure.axes for text in ax.texts]


def legend_labels(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


EVENTS = [
    TimelineEvent("audio", "Dog", 1.0, 6.0, 0.83),
    TimelineEvent("visual", "Car", 2.0, 9.0, 0.61),
    TimelineEvent("visual", "Cat", 4.0, 4.2, 0.99),  # too short to hold its score
]


def test_a_parse_timeline_has_a_legend_and_each_wide_events_score_on_its_bar() -> None:
    figure = timeline_figure(10.0, EVENTS, title="clip")
    assert legend_labels(figure) == ["audio event", "visual event"]
    assert figure.legends[0].get_title().get_text() == "numbers on bars: the event's score"
    assert sorted(texts(figure)) == ["0.61", "0.83"]


def test_a_video_without_an_audio_track_says_so_instead_of_drawing_audio_events() -> None:
    figure = timeline_figure(10.0, EVENTS, title="silent", has_audio=False)
    audio, visual = figure.axes
    assert [text.get_text() for text in audio.texts] == ["no audio track"]
    assert not audio.patches  # no audio bar
    assert len(visual.patches) == 2
    # With an audio track but no audio event, the panel says "no events" instead.
    only_visual = [event for event in EVENTS if event.modality == "visual"]
    figure = timeline_figure(10.0, only_visual, title="quiet")
    assert "no events" in [text.get_text() for text in figure.axes[0].texts]


def test_a_cut_file_is_drawn_over_its_declared_duration_with_the_missing_part_hatched(
    tmp_path: Path,
) -> None:
    figure = timeline_figure(20.0, EVENTS, title="cut", cut_at_s=10.0)
    for ax in figure.axes:
        assert ax.get_xlim() == (0.0, 20.0)
        hatched = [patch for patch in ax.patches if patch.get_hatch()]
        assert len(hatched) == 1
        x0, x1 = (hatched[0].get_x(), hatched[0].get_x() + hatched[0].get_width())
        assert (x0, x1) == (10.0, 20.0)
    assert "not in the file: cut at 10.0 s" in legend_labels(figure)
    # A whole file has no hatched region and no such legend entry.
    whole = timeline_figure(10.0, EVENTS, title="whole", cut_at_s=None)
    assert not [p for ax in whole.axes for p in ax.patches if p.get_hatch()]
    assert all("cut" not in label for label in legend_labels(whole))
    path = plot_timeline(tmp_path / "cut.png", 20.0, EVENTS, title="cut", cut_at_s=10.0)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_a_report_timeline_tells_predictions_from_the_ground_truth_in_its_legend() -> None:
    truth = [TimelineEvent("audio", "Dog", 0.0, 5.0)]
    figure = timeline_figure(10.0, EVENTS[:2], title="report", truth=truth)
    assert legend_labels(figure) == [
        "audio predicted event",
        "visual predicted event",
        "ground truth",
    ]

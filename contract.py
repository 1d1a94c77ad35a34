"""The data contract every room shares (DESIGN.md, "Data contracts"), defined once.

The stages, the extractors, the store and the networks all rely on these numbers: a
window is 10 s of video, cut into ten 1-s segments; visual extractors receive frames at
8 FPS; CLAP receives mono audio at 48 kHz; LLP has 25 event classes. This module sits
beneath every room (storage, model and extractors included) and imports nothing.
"""

FPS = 8.0  # frames per second every visual extractor receives
WINDOW_SECONDS = 10  # the parser's unit: one 10-s window
SEGMENT_SECONDS = 1
SEGMENTS_PER_WINDOW = WINDOW_SECONDS // SEGMENT_SECONDS  # T = 10
FRAMES_PER_WINDOW = round(WINDOW_SECONDS * FPS)  # 80
CLAP_SAMPLE_RATE = 48_000  # LAION-CLAP's input rate, Hz
NUM_CLASSES = 25  # LLP's event classes (their names: avvp.model.classes)

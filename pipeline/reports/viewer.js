// The parse viewer (viewer.py writes it into index.html). It reads the embedded JSON
// and builds every element with textContent, so no file or class name becomes HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("avvp-data").textContent);
  const MODALITIES = ["audio", "visual", "audio-visual"];
  const WINDOW_SECONDS = 10;
  const player = document.getElementById("player");
  const tracks = document.getElementById("tracks");
  const classFilter = document.getElementById("class-filter");
  let current = null; // the selected video
  let cursor = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const seconds = (t) => Number(t).toFixed(1) + " s";

  const isCut = (video) => video.cut_at_s !== null && video.cut_at_s !== undefined;

  // How far a video decodes; without a duration (never for an ok file), its windows' span.
  const decoded = (video) => video.duration_s || video.windows * WINDOW_SECONDS || 1;

  // The tracks' time span: a cut file's declared length, so the part it lacks shows.
  function lengthOf(video) {
    return isCut(video) ? Math.max(decoded(video), video.declared_duration_s || 0) : decoded(video);
  }

  function describe(video) {
    if (!isCut(video)) return seconds(decoded(video));
    return "cut at " + seconds(video.cut_at_s) + " of " + seconds(lengthOf(video));
  }

  // Where `t` falls on the selected video's tracks, from 0 to 1.
  const fraction = (t) => Math.min(Math.max(t / lengthOf(current), 0), 1);

  function listVideos() {
    const list = document.getElementById("videos");
    data.videos.forEach((video, index) => {
      const item = el("li");
      item.dataset.status = video.status;
      item.title = video.path;
      const ok = video.status === "ok";
      const name = el(ok ? "button" : "span", "name", video.video_id);
      item.append(name, el("span", "status", video.status));
      if (ok) {
        name.type = "button";
        name.addEventListener("click", () => select(index));
        const events = video.events.length + (video.events.length === 1 ? " event" : " events");
        item.append(el("span", "meta", describe(video) + ", " + events));
      } else {
        item.append(el("span", "reason", video.reason));
      }
      list.append(item);
    });
  }

  function fillClassFilter() {
    const names = new Set(data.videos.flatMap((video) => video.events.map((e) => e.class)));
    for (const name of [...names].sort()) {
      const option = el("option", null, name);
      option.value = name;
      classFilter.append(option);
    }
  }

  function shown(event) {
    const boxes = document.querySelectorAll("input[name=modality]:checked");
    const modalities = Array.from(boxes, (box) => box.value);
    const name = classFilter.value;
    return modalities.includes(event.modality) && (!name || name === event.class);
  }

  function select(index) {
    current = data.videos[index];
    document.querySelectorAll("#videos li").forEach((item, i) => {
      item.classList.toggle("selected", i === index);
    });
    document.getElementById("title").textContent = current.video_id + " (" + describe(current) + ")";
    player.hidden = false;
    player.src = current.src;
    render();
  }

  // The tracks of the selected video, drawn anew whenever it or a filter changes.
  function render() {
    tracks.replaceChildren(row("", axis()));
    for (const modality of MODALITIES) tracks.append(track(modality));
    cursor = el("div", "cursor");
    tracks.append(cursor);
    moveCursor(player.currentTime);
  }

  function row(label, lane) {
    const node = el("div", "row");
    node.append(el("div", "label", label), lane);
    return node;
  }

  // A lane spans the video's time; past the point a cut file stops decoding, hatched.
  function lane(note) {
    const node = el("div", "lane");
    if (isCut(current) && current.cut_at_s < lengthOf(current)) {
      const hatch = el("div", "cut");
      hatch.style.left = 100 * fraction(current.cut_at_s) + "%";
      hatch.title = "the file is cut at " + seconds(current.cut_at_s) + ": nothing decodes past it";
      node.append(hatch);
    }
    if (note) node.append(el("span", "note", note));
    return node;
  }

  function axis() {
    const node = lane();
    node.classList.add("axis");
    const length = lengthOf(current);
    // A number every `step` seconds keeps them from overlapping; a tick every second
    // while that stays a few hundred elements.
    const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => length / s <= 12) || 1800;
    const every = length <= 600 ? 1 : step;
    for (let t = 0; t <= length; t += every) {
      const tick = el("div", t % step ? "tick" : "tick major");
      tick.style.left = 100 * fraction(t) + "%";
      if (!(t % step)) tick.append(el("span", null, t + " s"));
      node.append(tick);
    }
    return node;
  }

  function track(modality) {
    const node = el("section", "track");
    node.dataset.modality = modality;
    node.append(el("h3", null, modality));
    // Audio-visual events need the audio too: a silent file has neither.
    if (current.has_audio === false && modality !== "visual") {
      node.append(row("", lane("no audio track")));
      return node;
    }
    const all = current.events.filter((e) => e.modality === modality);
    const events = all.filter(shown);
    if (!events.length) node.append(row("", lane(all.length ? "hidden by the filters" : "no events")));
    for (const name of [...new Set(events.map((e) => e.class))].sort()) {
      const classLane = lane();
      for (const event of events.filter((e) => e.class === name)) classLane.append(bar(event));
      node.append(row(name, classLane));
    }
    return node;
  }

  function bar(event) {
    const node = el("button", "event " + event.modality);
    node.type = "button";
    node.style.left = 100 * fraction(event.onset_s) + "%";
    node.style.right = 100 * (1 - fraction(event.offset_s)) + "%";
    node.dataset.onset = event.onset_s;
    node.dataset.offset = event.offset_s;
    node.dataset.class = event.class;
    node.dataset.modality = event.modality;
    node.title = event.class + " (" + event.modality + "): " + seconds(event.onset_s) +
      " to " + seconds(event.offset_s) + ", score " + event.score.toFixed(2);
    node.addEventListener("click", () => {
      player.currentTime = event.onset_s;
      moveCursor(event.onset_s);
    });
    return node;
  }

  function moveCursor(t) {
    if (cursor) cursor.style.setProperty("--at", fraction(t));
  }

  player.addEventListener("timeupdate", () => moveCursor(player.currentTime));
  // timeupdate comes only a few times a second: follow each frame while playing.
  player.addEventListener("play", function follow() {
    moveCursor(player.currentTime);
    if (!player.paused && !player.ended) requestAnimationFrame(follow);
  });
  document.getElementById("filters").addEventListener("change", () => current && render());

  listVideos();
  fillClassFilter();
  const first = data.videos.findIndex((video) => video.status === "ok");
  if (first >= 0) select(first);
})();

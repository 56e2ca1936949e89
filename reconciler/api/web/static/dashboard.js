// Live phases for the dashboard: each phase change from /events is applied to the page in
// place. The pages are complete without this script; it only keeps the phase, since and
// revision cells current. Untrusted text is only ever set with textContent.
"use strict";

(() => {
  const PHASES = [
    "Pending", "InSync", "Building", "Testing", "Pushing",
    "Migrating", "Deploying", "Failed", "Suspended",
  ];
  const SHA = /^[0-9a-f]{7,64}$/;
  const SHORT = 7;

  const body = document.body;
  const eventsUrl = body.dataset.events;
  const statusUrl = body.dataset.status;
  const indicator = document.querySelector("[data-live-indicator]");
  if (!eventsUrl || typeof EventSource === "undefined") {
    return;
  }

  // Mirrors phase_class() in reconciler/web/present.py.
  const phaseClass = (phase) =>
    PHASES.includes(phase) ? `phase-${phase.toLowerCase()}` : "phase-unknown";

  // 2024-05-01T12:00:00.123456Z -> 2024-05-01 12:00:00 UTC, as the server writes it.
  const when = (iso) =>
    iso.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC");

  // Compared as strings, not put into a selector: an app's name is not ours to trust.
  const blocksOf = (app) =>
    Array.from(document.querySelectorAll("[data-app]")).filter((el) => el.dataset.app === app);

  function setPhase(el, phase) {
    for (const name of Array.from(el.classList)) {
      if (name.startsWith("phase-")) {
        el.classList.remove(name);
      }
    }
    el.classList.add(phaseClass(phase));
    el.textContent = phase;
  }

  function setSince(el, at) {
    const time = el.querySelector("time");
    if (time) {
      time.dateTime = at;
      time.title = at;
      time.textContent = when(at);
    }
    const ago = el.querySelector(".ago");
    if (ago) {
      ago.textContent = "just now";
    }
  }

  // A new revision: its SHA (linked like the server links it); the old subject goes, the
  // page learns the new one on its next load.
  function setRevision(block, el, revision, prefix) {
    if (!SHA.test(revision) || el.dataset.sha === revision) {
      return;
    }
    el.dataset.sha = revision;
    for (const subject of block.querySelectorAll('[data-field="subject"]')) {
      subject.textContent = "";
    }
    const code = document.createElement("code");
    code.textContent = revision.slice(0, SHORT);
    let shown = code;
    if (prefix.startsWith("https://") || prefix.startsWith("http://")) {
      shown = document.createElement("a");
      shown.href = prefix + revision;
      shown.title = revision;
      shown.appendChild(code);
    } else {
      code.title = revision;
    }
    el.replaceChildren(shown);
  }

  function apply(change) {
    if (!change || typeof change.app !== "string" || typeof change.phase !== "string") {
      return;
    }
    for (const block of blocksOf(change.app)) {
      for (const el of block.querySelectorAll('[data-field="phase"]')) {
        setPhase(el, change.phase);
      }
      if (typeof change.at === "string") {
        for (const el of block.querySelectorAll('[data-field="since"]')) {
          setSince(el, change.at);
        }
      }
      if (typeof change.revision === "string") {
        for (const el of block.querySelectorAll('[data-field="revision"]')) {
          setRevision(block, el, change.revision, block.dataset.commitPrefix || "");
        }
      }
    }
  }

  // After a reconnect the changes in between were missed: read the current phases once.
  async function refresh() {
    if (!statusUrl) {
      return;
    }
    try {
      const answer = await fetch(statusUrl, { headers: { Accept: "application/json" } });
      if (!answer.ok) {
        return;
      }
      const document = await answer.json();
      for (const app of document.apps || []) {
        apply({
          app: app.name,
          phase: app.phase,
          revision: app.desired ? app.desired.revision : null,
          at: app.last_transition,
        });
      }
    } catch (_) {
      // The next event, or the next reconnect, brings the page up to date.
    }
  }

  function show(state, text) {
    body.dataset.live = state;
    if (indicator) {
      indicator.hidden = false;
      indicator.textContent = text;
      indicator.className = `live live-${state}`;
    }
  }

  // The app page's timeline: redrawn from each `stage` event, to one scale, with the
  // running stages growing each second. Mirrors charts.timeline() in present.
  const SVG = "http://www.w3.org/2000/svg";
  const LABELS = 190;
  const ROW = 22;
  let stages = null;

  function seconds(a, b) {
    return Math.max(0, (Date.parse(b) - Date.parse(a)) / 1000);
  }

  function seconds_text(value) {
    if (value >= 3600) return `${Math.floor(value / 3600)} h ${Math.floor((value % 3600) / 60)} min`;
    if (value >= 60) return `${Math.floor(value / 60)} min ${Math.floor(value % 60)} s`;
    return `${value.toFixed(1)} s`;
  }

  function draw() {
    const figure = document.querySelector("[data-timeline]");
    if (!figure || !stages || !stages.length) {
      return;
    }
    const svg = figure.querySelector("svg");
    const width = svg.viewBox.baseVal.width;
    const now = new Date().toISOString();
    const start = stages.map((s) => s.started_at).sort()[0];
    const running = stages.some((s) => !s.finished_at);
    const end = running ? now : stages.map((s) => s.finished_at).sort().slice(-1)[0];
    const total = Math.max(seconds(start, end), 0.001);
    const scale = (width - LABELS) / total;
    const height = stages.length * ROW + 22;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("height", String(height));
    for (const old of svg.querySelectorAll("g.bar, text.tick")) {
      old.remove();
    }
    const rows = [];
    stages.forEach((stage, row) => {
      const took = seconds(stage.started_at, stage.finished_at || now);
      const offset = seconds(start, stage.started_at);
      const g = document.createElementNS(SVG, "g");
      const kind = "stage-" + stage.name.replace(/[^a-z0-9_]/g, "");
      g.setAttribute("class", `bar ${kind}${stage.step ? " step" : ""}${stage.finished_at ? "" : " running"}`);
      g.dataset.stage = stage.label;
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${stage.label}: ${stage.finished_at ? "" : "running, "}${seconds_text(took)} (from +${seconds_text(offset)})`;
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", String(4 + (stage.step ? 12 : 0)));
      text.setAttribute("y", String(row * ROW + 16));
      text.textContent = stage.label;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(LABELS + offset * scale));
      rect.setAttribute("y", String(row * ROW + 4));
      rect.setAttribute("width", String(Math.max(took * scale, 1)));
      rect.setAttribute("height", stage.step ? "12" : "16");
      rect.setAttribute("rx", "2");
      g.append(title, text, rect);
      svg.appendChild(g);
      const tr = document.createElement("tr");
      for (const cell of [stage.label, `+${offset.toFixed(1)} s`, `${stage.finished_at ? "" : "running, "}${took.toFixed(1)} s`]) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      }
      rows.push(tr);
    });
    for (let i = 0; i <= 4; i++) {
      const tick = document.createElementNS(SVG, "text");
      tick.setAttribute("class", "tick");
      tick.setAttribute("x", String(LABELS + ((width - LABELS) * i) / 4));
      tick.setAttribute("y", String(height - 4));
      tick.setAttribute("text-anchor", i === 0 ? "start" : i === 4 ? "end" : "middle");
      tick.textContent = "+" + seconds_text((total * i) / 4);
      svg.appendChild(tick);
    }
    figure.dataset.running = running ? "true" : "false";
    figure.dataset.seconds = String(total);
    const body = figure.querySelector("[data-timeline-table] tbody");
    if (body) {
      body.replaceChildren(...rows);
    }
  }

  function applyStages(change) {
    const section = document.querySelector("[data-app-timeline]");
    if (!change || !section || section.dataset.appTimeline !== change.app || !Array.isArray(change.stages)) {
      return;
    }
    if (!section.querySelector("[data-timeline]")) {
      return; // a page without a drawing yet shows the release on its next load
    }
    stages = change.stages.filter((s) => typeof s.label === "string" && typeof s.started_at === "string");
    section.querySelector("[data-timeline]").hidden = false;
    const none = section.querySelector("[data-timeline-none]");
    if (none) {
      none.remove();
    }
    draw();
  }

  // A page loaded while a release runs: its bars grow from the drawing the server made.
  const drawn = document.querySelector("[data-timeline][data-running='true']");
  if (drawn) {
    stages = Array.from(drawn.querySelectorAll("g.bar")).map((g) => ({
      label: g.dataset.stage,
      name: (Array.from(g.classList).find((c) => c.startsWith("stage-")) || "stage-").slice(6),
      step: g.classList.contains("step") ? "step" : "",
      started_at: g.dataset.started,
      finished_at: g.dataset.finished || null,
    }));
  }

  setInterval(() => {
    if (stages && stages.some((s) => !s.finished_at)) {
      draw();
    }
  }, 1000);

  let reconnecting = false;
  const source = new EventSource(eventsUrl);
  source.addEventListener("stage", (message) => {
    try {
      applyStages(JSON.parse(message.data));
    } catch (_) {
      // a stage event this page cannot read: its next load shows the release
    }
  });
  source.addEventListener("open", () => {
    show("open", "live");
    if (reconnecting) {
      refresh();
    }
    reconnecting = false;
  });
  source.addEventListener("error", () => {
    show("closed", "reconnecting…");
    reconnecting = true;
  });
  source.addEventListener("message", (message) => {
    let change;
    try {
      change = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    apply(change);
  });
})();

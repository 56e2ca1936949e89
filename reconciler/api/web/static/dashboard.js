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

  let reconnecting = false;
  const source = new EventSource(eventsUrl);
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

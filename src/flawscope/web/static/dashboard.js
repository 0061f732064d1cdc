/* The dashboard: draws the charts, then follows the server's event stream and updates in place. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const pct = (v) => (v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%");
  const ms = (v) => (v === null || v === undefined ? "—" : Math.round(v).toString());
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  let lastStrip = "";
  let lastStripAt = 0;
  let chartsAt = 0;
  // How often the heavy parts follow the stream (the numbers follow every update, once a second):
  // at full line speed the strip's eight pictures were all new at each refresh, and fetching,
  // decoding and drawing them was most of what the dashboard cost the line PC's CPU; nobody reads
  // eight parts going by faster than this. The charts are redrawn at most every CHARTS_MS.
  const STRIP_MS = 5000;
  const CHARTS_MS = 2000;
  // A snapshot held back by those limits is drawn when they allow (the last one is never lost).
  let trail = null;
  function later(s, wait) {
    if (trail) clearTimeout(trail);
    trail = setTimeout(() => { trail = null; update(s); }, Math.max(50, wait));
  }
  window.flawscopeUpdates = 0;

  const drawn = {};
  // Redraw a part of the page only when its data changed: the browser's work stays small.
  function changed(name, data) {
    const key = JSON.stringify(data);
    if (drawn[name] === key) return false;
    drawn[name] = key;
    return true;
  }

  function rows(tbody, html, empty, cols) {
    tbody.innerHTML = html || `<tr><td colspan="${cols}" class="muted">${empty}</td></tr>`;
  }

  function card(p) {
    const a = document.createElement("a");
    a.className = `card o-${p.outcome}`;
    a.href = `/parts/${p.seq}`;
    a.dataset.seq = p.seq;
    a.innerHTML = (p.has_image ? `<img src="/parts/${p.seq}/thumb.jpg" alt="">` : `<div class="noimg">no image</div>`) +
      `<div class="cap"><span class="word">${esc(p.outcome.replace("_", " ").toUpperCase())}</span><span class="pid">${esc(p.part_id)}</span></div>`;
    return a;
  }

  let pending = false;
  function strip(last) {
    const key = last.map((p) => p.seq).join(",");
    const now = Date.now();
    // At most every STRIP_MS. Cards already shown are moved, not rebuilt, and new ones go in once
    // their pictures are decoded: no empty boxes.
    if (key === lastStrip) return;
    if (pending || now - lastStripAt < STRIP_MS) return Math.max(50, STRIP_MS - (now - lastStripAt));
    lastStrip = key; lastStripAt = now;
    const box = $("last-parts");
    const shown = new Map(Array.from(box.children).map((el) => [el.dataset.seq, el]));
    const cards = last.slice().reverse().map((p) => shown.get(String(p.seq)) || card(p));
    const fresh = cards.filter((c) => !c.isConnected).map((c) => c.querySelector("img")).filter(Boolean);
    pending = true;
    Promise.allSettled(fresh.map((img) => img.decode())).then(() => {
      box.replaceChildren(...cards);
      pending = false;
    });
  }

  function update(s) {
    $("t-throughput").textContent = s.throughput_per_min === null ? "—" : Math.round(s.throughput_per_min);
    $("t-yield").textContent = pct(s.shift.yield);
    $("t-review").textContent = pct(s.shift.review_rate);
    $("t-reject").textContent = pct(s.shift.reject_rate);
    $("t-n").textContent = `${s.shift.n} parts this shift`;
    const waiting = Object.values(s.queue).reduce((a, b) => a + b, 0);
    $("t-queue").textContent = waiting;
    const badge = $("nav-queue");
    if (badge) { badge.textContent = waiting; badge.classList.toggle("empty", !waiting); }
    $("shift-label").textContent = s.shift.label;
    $("last-seq").textContent = s.head;
    $("feed-error").textContent = s.error || "";
    const now = Date.now();
    let wait = 0;
    if (now - chartsAt >= CHARTS_MS) {
      chartsAt = now;
      if (changed("trend", s.trend)) drawTrend($("trend"), s.trend);
      if (changed("control", s.control)) drawControl($("control"), s.control);
    } else if (drawn.trend !== JSON.stringify(s.trend) || drawn.control !== JSON.stringify(s.control)) {
      wait = CHARTS_MS - (now - chartsAt);
    }
    const stripWait = strip(s.last);
    if (stripWait) wait = wait ? Math.min(wait, stripWait) : stripWait;
    if (wait) later(s, wait);
    if (changed("by_shift", s.by_shift)) rows($("by-shift").tBodies[0], s.by_shift.map((r) =>
      `<tr><td>${esc(r.shift)}</td><td class="cam">${esc(r.camera)}</td><td class="num">${r.n}</td><td class="num">${pct(r.yield)}</td><td class="num">${pct(r.review_rate)}</td><td class="num">${pct(r.reject_rate)}</td></tr>`).join(""), "No parts yet.", 6);
    if (changed("latency", s.latency)) rows($("latency").tBodies[0], Object.entries(s.latency).map(([cam, l]) =>
      `<tr><td class="cam">${esc(cam)}</td><td class="num">${ms(l.p50)}</td><td class="num">${ms(l.p95)}</td><td class="num">${ms(l.p99)}</td></tr>`).join(""), "No parts yet.", 4);
    if (changed("sinks", s.sinks)) rows($("sinks").tBodies[0], (s.sinks || []).map((k) =>
      `<tr><td>${esc(k.name)}</td><td>${esc(k.state)}</td><td class="num">${k.backlog ?? ""}</td><td>${esc(k.last_error || "")}</td></tr>`).join(""), "No sinks.", 4);
  }

  /* Start on the dashboard: draw what the page brought, open the stream; stopping closes it. */
  function start() {
    for (const name of Object.keys(drawn)) delete drawn[name];
    lastStrip = ""; lastStripAt = 0; chartsAt = 0; pending = false;
    const initial = JSON.parse($("initial").textContent);
    update(initial);
    const live = $("live");
    const source = new EventSource(`/events/stream?after=${initial.head}`);
    window.flawscopeStream = source;
    window.flawscopeStreams = (window.flawscopeStreams || 0) + 1;
    source.addEventListener("open", () => { live.textContent = "LIVE"; live.className = "live on"; });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) return;
      live.textContent = "DISCONNECTED — retrying"; live.className = "live off";
    });
    // The session lapsed (logged out elsewhere, expired): the stream says so and ends; the login
    // page comes back to the dashboard.
    source.addEventListener("signed-out", (event) => {
      source.close();
      live.textContent = "SIGNED OUT"; live.className = "live off";
      const login = JSON.parse(event.data).login;
      if (window.flawscopeVisit) window.flawscopeVisit(login, { history: "replace" });
      else window.location.assign(login);
    });
    source.addEventListener("update", (event) => {
      const s = JSON.parse(event.data);
      live.textContent = "LIVE"; live.className = "live on";
      update(s);
      window.flawscopeUpdates += 1;
      window.flawscopeHead = s.head;
      window.flawscopeSeenAt = Date.now();
    });
    // Leaving the dashboard (another page swapped in, or another document) closes the stream at once.
    return () => {
      source.close();
      if (window.flawscopeStream === source) window.flawscopeStream = null;
      if (trail) { clearTimeout(trail); trail = null; }
    };
  }
  window.flawscopePage("dashboard", start);
})();

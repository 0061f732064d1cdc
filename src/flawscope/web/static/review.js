/* The review page: every action has a key; drawn regions go with a DEFECT verdict.
 *
 * A verdict is posted in the background and the next part's page, as the server renders it,
 * replaces this one (nav.js: no new document, quicker and lighter for a line PC's CPU; the part
 * reviewed is replaced in the history, not added to it). When that cannot be done the form is
 * submitted the ordinary way; the form's request id makes a second submission of the same verdict
 * harmless. The keys are bound while a review page is on screen, and unbound when it is left.
 */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let polygons = [], drawing = false, current = null, sending = false;
  // The drawing layer gets its pixels only once the reviewer draws: an empty canvas the size of
  // the picture cost Chromium a forced layout, a bitmap and a copy to the compositor on every
  // part shown (30-80 ms of CPU a part on a loaded line PC), for a layer most parts never use.
  let sized = false;
  window.flawscopeSwaps = 0;
  window.flawscopeTimings = [];

  function press(button, on) { if (button) button.setAttribute("aria-pressed", on ? "true" : "false"); }

  function fitCanvas() {
    const canvas = $("draw"), img = $("part-img");
    if (!sized || !canvas || !img) return;
    const rect = img.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    paint();
  }

  function paint() {
    const canvas = $("draw");
    if (!canvas || !sized) return;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.lineWidth = 3 * (window.devicePixelRatio || 1);
    for (const poly of current ? [...polygons, current] : polygons) {
      if (poly.length < 2) continue;
      ctx.beginPath();
      poly.forEach(([x, y], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x * canvas.width, y * canvas.height));
      ctx.closePath();
      ctx.fillStyle = "rgba(255, 59, 59, 0.35)";
      ctx.strokeStyle = "#ff3b3b";
      ctx.fill(); ctx.stroke();
    }
    const count = $("drawn-count");
    if (count) count.textContent = polygons.length ? `${polygons.length} region(s) drawn: they go with DEFECT` : "";
  }

  function point(event) {
    const rect = $("draw").getBoundingClientRect();
    return [Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)),
            Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height))];
  }

  function toggleDraw(on) {
    drawing = on === undefined ? !drawing : on;
    if (drawing && !sized) { sized = true; fitCanvas(); }
    const stage = $("stage");
    if (stage) stage.classList.toggle("drawing", drawing);
    press($("btn-draw"), drawing);
  }

  function toggle(cls, button) {
    const stage = $("stage");
    if (!stage) return;
    const hidden = stage.classList.toggle(cls);
    press(button, !hidden);
  }

  /* Bind what belongs to the part on screen (called again after each swap). */
  function init() {
    polygons = []; drawing = false; current = null; sending = false; sized = false;
    const stage = $("stage"), canvas = $("draw"), form = $("verdict-form");
    if (canvas && stage) {
      canvas.addEventListener("pointerdown", (e) => {
        if (!drawing) return;
        canvas.setPointerCapture(e.pointerId);
        current = [point(e)];
        e.preventDefault();
      });
      canvas.addEventListener("pointermove", (e) => {
        if (!drawing || !current) return;
        const [x, y] = point(e), [px, py] = current[current.length - 1];
        if (Math.hypot(x - px, y - py) > 0.004) { current.push([x, y]); paint(); }
      });
      const finish = () => {
        if (current && current.length >= 3) polygons.push(current);
        current = null; paint();
      };
      canvas.addEventListener("pointerup", finish);
      canvas.addEventListener("pointercancel", finish);
      stage.addEventListener("fitted", fitCanvas);
    }
    if (form) {
      form.addEventListener("submit", (e) => {
        if ("native" in form.dataset) return; // the in-page way failed: the ordinary submission
        if (sending) { e.preventDefault(); return; }
        const verdict = e.submitter ? e.submitter.value : "";
        $("regions-field").value = verdict === "defect" && polygons.length ? JSON.stringify(polygons) : "";
        sending = true;
        form.classList.add("sending");
        if (window.fetch && window.DOMParser && e.submitter) {
          e.preventDefault();
          post(form, e.submitter);
        }
      });
    }
    document.querySelectorAll(".toolbar .tool").forEach((button) => {
      button.addEventListener("click", () => { const act = actions[button.dataset.key]; if (act) act(); });
    });
    if (window.flawscopeFit) window.flawscopeFit();
  }

  async function post(form, submitter) {
    const started = performance.now();
    const body = new URLSearchParams(new FormData(form, submitter));
    const shown = await window.flawscopeVisit(form.action, { method: "POST", body, history: "replace", form, submitter });
    if (!shown) return;
    window.flawscopeSwaps += 1;
    window.flawscopeTimings.push(performance.now() - started);
  }

  function submit(verdict) {
    const form = $("verdict-form");
    if (sending || !form) return;
    form.requestSubmit(form.querySelector(`button[value="${verdict}"]`));
  }

  const actions = {
    g: () => submit("good"),
    d: () => submit("defect"),
    u: () => submit("unsure"),
    h: () => toggle("no-heat", $("btn-heat")),
    r: () => toggle("no-boxes", $("btn-regions")),
    m: () => toggleDraw(),
    z: () => { polygons.pop(); paint(); },
    n: () => { const note = $("note"); if (note) note.focus(); },
    s: () => { const skip = $("skip"); if (skip) window.flawscopeVisit(skip.href); },
  };

  function onKey(e) {
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    const note = $("note");
    if (note && e.target === note) {
      if (e.key === "Escape" || e.key === "Enter") { e.preventDefault(); note.blur(); }
      return;
    }
    if (e.key === "Escape") { toggleDraw(false); return; }
    const key = e.key.toLowerCase();
    if (/^[1-9]$/.test(key)) {
      const input = document.querySelectorAll('#categories input[name="category"]')[Number(key) - 1];
      if (input) { input.checked = true; e.preventDefault(); }
      return;
    }
    if (actions[key]) { e.preventDefault(); actions[key](); }
  }

  window.flawscopePage("review", () => {
    init();
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", window.flawscopeFit);
    return () => {
      document.removeEventListener("keydown", onKey);
      window.removeEventListener("resize", window.flawscopeFit);
    };
  });
})();

/* The review page: every action has a key; drawn regions go with a DEFECT verdict. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("verdict-form");
  const stage = $("stage");
  const canvas = $("draw");
  const note = $("note");
  const polygons = [];
  let drawing = false, current = null, sending = false;

  function press(button, on) { if (button) button.setAttribute("aria-pressed", on ? "true" : "false"); }

  function fitCanvas() {
    if (!canvas || !stage) return;
    const img = $("part-img");
    const rect = img.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    paint();
  }

  function paint() {
    if (!canvas) return;
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
    const rect = canvas.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)),
            Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height))];
  }

  function toggleDraw(on) {
    drawing = on === undefined ? !drawing : on;
    if (stage) stage.classList.toggle("drawing", drawing);
    press($("btn-draw"), drawing);
  }

  if (canvas) {
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
    fitCanvas();
  }

  function toggle(cls, button) {
    if (!stage) return;
    const hidden = stage.classList.toggle(cls);
    press(button, !hidden);
  }

  function submit(verdict) {
    if (sending || !form) return;
    form.requestSubmit(form.querySelector(`button[value="${verdict}"]`));
  }

  if (form) {
    // One submission per page: a second key press or click while the first is on its way does nothing.
    form.addEventListener("submit", (e) => {
      if (sending) { e.preventDefault(); return; }
      const verdict = e.submitter ? e.submitter.value : "";
      $("regions-field").value = verdict === "defect" && polygons.length ? JSON.stringify(polygons) : "";
      sending = true;
      form.classList.add("sending");
    });
  }

  window.addEventListener("pageshow", () => { sending = false; if (form) form.classList.remove("sending"); });

  const categories = Array.from(document.querySelectorAll('#categories input[name="category"]'));
  const actions = {
    g: () => submit("good"),
    d: () => submit("defect"),
    u: () => submit("unsure"),
    h: () => toggle("no-heat", $("btn-heat")),
    r: () => toggle("no-boxes", $("btn-regions")),
    m: () => toggleDraw(),
    z: () => { polygons.pop(); paint(); },
    n: () => { if (note) note.focus(); },
    s: () => { const skip = $("skip"); if (skip) window.location.href = skip.href; },
  };

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    if (e.target === note) {
      if (e.key === "Escape" || e.key === "Enter") { e.preventDefault(); note.blur(); }
      return;
    }
    if (e.key === "Escape") { toggleDraw(false); return; }
    const key = e.key.toLowerCase();
    if (/^[1-9]$/.test(key)) {
      const input = categories[Number(key) - 1];
      if (input) { input.checked = true; e.preventDefault(); }
      return;
    }
    if (actions[key]) { e.preventDefault(); actions[key](); }
  });

  document.querySelectorAll(".toolbar .tool").forEach((button) => {
    button.addEventListener("click", () => { const act = actions[button.dataset.key]; if (act) act(); });
  });
})();

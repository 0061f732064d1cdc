/* In-page navigation: the app's links and forms fetch the server-rendered page and swap the body.
 *
 * A new document costs Chromium far more than the page itself (a new document, the CSS and scripts
 * parsed again, every listener rebound): on a 2-core line PC that CPU is taken from the line. So a
 * link or form of this app is fetched in the background, its pictures are decoded while the old
 * page stays on screen, and then its <body> replaces this one and the address is pushed to the
 * history (the back button fetches the page it returns to). Each page's script registers what it
 * starts and stops (flawscopePage): the dashboard's event stream is closed when it is left and
 * opened again on return. Anything unusual (another site, a file, a new tab, an answer that is not
 * an HTML page, a failed request, new versions of the scripts) is a normal navigation instead.
 */
"use strict";
(function () {
  const inits = {};
  let stops = [];
  let visiting = null;
  const PICTURES_WAIT_MS = 1000; // the longest a swap waits for the new page's pictures
  const SLOW_MS = 300; // a visit longer than this shows the progress cursor
  // Paths that are files, streams or the API, never pages.
  const NOT_PAGES = /^\/(static|assets|api|store|events)\/|\/(image|heat\.png|thumb\.jpg)$/;
  window.flawscopeNavs = 0;

  /** Register what a page starts (``start()`` may return a function that stops it). */
  window.flawscopePage = (name, start) => { inits[name] = start; };

  function startPage() {
    const names = ["*", ...(document.body.dataset.page || "").split(" ").filter(Boolean)];
    for (const name of names) {
      if (!inits[name]) continue;
      try {
        const stop = inits[name]();
        if (typeof stop === "function") stops.push(stop);
      } catch (error) { console.error(error); }
    }
  }

  function stopPage() {
    for (const stop of stops.splice(0)) {
      try { stop(); } catch (error) { console.error(error); }
    }
  }

  function appUrl(href) {
    let url;
    try { url = new URL(href, location.href); } catch (error) { return null; }
    if (url.origin !== location.origin || NOT_PAGES.test(url.pathname)) return null;
    return url;
  }

  const assets = (doc) => (doc.querySelector('meta[name="flawscope-assets"]') || {}).content;

  /* Wait (at most PICTURES_WAIT_MS) until the new body's pictures are decoded: no empty boxes (a
   * part is never shown without its picture). Pictures marked lazy (the dashboard's thumbnails)
   * are not waited for, as a new document's load event does not wait for them either. */
  function pictures(body) {
    const shown = Array.from(body.querySelectorAll("img[src]")).filter((img) => img.loading !== "lazy");
    const decoded = Promise.allSettled(shown.map((img) => img.decode()));
    let timer = null;
    const late = new Promise((done) => { timer = setTimeout(done, PICTURES_WAIT_MS); });
    // The timer is cleared once the pictures are in: no stray wake-up a second after each visit.
    return Promise.race([decoded, late]).finally(() => clearTimeout(timer));
  }

  // Where each history entry was scrolled to, kept here: one history call per swap (a second one,
  // to note the scroll in the entry's state, would be a second navigation to anything watching).
  const scrolls = new Map();
  let entry = Date.now();
  const entryOf = (state) => (state && state.flawscope ? state.entry : undefined);

  /* Put a fetched page on screen; the address changes last, once the page is started. */
  function swap(title, body, url, how) {
    stopPage();
    scrolls.set(entry, window.scrollY);
    document.title = title;
    document.body.replaceWith(body);
    const hash = new URL(url).hash;
    const target = hash && document.getElementById(decodeURIComponent(hash.slice(1)));
    if (target) target.scrollIntoView();
    else window.scrollTo(0, how.scroll || 0);
    const focus = document.body.querySelector("[autofocus]");
    if (focus) focus.focus();
    startPage();
    if (how.history === "push") {
      entry += 1;
      history.pushState({ flawscope: true, entry }, "", url);
    } else if (how.history === "replace") {
      history.replaceState({ flawscope: true, entry }, "", url);
    } else {
      entry = how.entry;
    }
    window.flawscopeNavs += 1;
  }

  /* A normal navigation (or submission) instead of a swap. */
  function fallback(href, how) {
    if (how.form) {
      how.form.dataset.native = "1";
      how.form.requestSubmit(how.submitter || null);
    } else if (how.history === "none") {
      location.reload();
    } else {
      location.assign(href);
    }
  }

  /**
   * Fetch a page of the app and swap it in.
   *
   * how.method/how.body: a form's request; how.history: "push" (a link, a form), "replace" (a
   * verdict: the part reviewed is not a page to go back to) or "none" (back/forward); how.scroll:
   * where to scroll. Resolves true once the page is shown, false when it fell back to a normal
   * navigation (or another visit took over).
   */
  async function visit(href, how = {}) {
    how = { history: "push", method: "GET", ...how };
    if (visiting) visiting.abort();
    const control = new AbortController();
    visiting = control;
    // The progress cursor only when a page is slow to come: a class on <html> makes Chromium
    // recompute the style of the whole page, twice per visit, for feedback nobody sees in 0.1 s.
    const slow = setTimeout(() => document.documentElement.classList.add("visiting"), SLOW_MS);
    try {
      const answer = await fetch(href, {
        method: how.method,
        body: how.body,
        credentials: "same-origin",
        signal: control.signal,
        headers: { accept: "text/html" },
      });
      const type = answer.headers.get("content-type") || "";
      if (!type.startsWith("text/html") || !appUrl(answer.url)) throw new Error(`not a page: ${type}`);
      // A page the server refused to show is shown the normal way (for a GET; a form that was
      // already sent is not sent twice: its answer is shown as a normal submission would).
      if (!answer.ok && how.method === "GET") throw new Error(`answer ${answer.status}`);
      const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
      const body = doc.body;
      if (!body || assets(doc) !== assets(document)) throw new Error("new scripts: load them");
      document.adoptNode(body); // its pictures start loading now
      await pictures(body);
      if (control.signal.aborted) return false;
      swap(doc.title, body, answer.url, how);
      return true;
    } catch (error) {
      if (control.signal.aborted) return false;
      console.warn(`flawscope: a normal navigation to ${href} (${error})`);
      fallback(href, how);
      return false;
    } finally {
      clearTimeout(slow);
      if (visiting === control) {
        visiting = null;
        const root = document.documentElement.classList;
        if (root.contains("visiting")) root.remove("visiting");
      }
    }
  }
  window.flawscopeVisit = visit;

  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    const link = event.target.closest("a[href]");
    if (!link || link.target || link.hasAttribute("download") || "native" in link.dataset) return;
    const url = appUrl(link.href);
    if (!url) return;
    if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
    event.preventDefault();
    visit(url.href);
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (event.defaultPrevented || form.target || "native" in form.dataset) return;
    const submitter = event.submitter || null;
    const method = ((submitter && submitter.getAttribute("formmethod")) || form.method || "get").toLowerCase();
    const url = appUrl((submitter && submitter.getAttribute("formaction")) || form.action);
    if (!url || (method !== "get" && method !== "post")) return;
    event.preventDefault();
    const data = new FormData(form, submitter);
    if (method === "get") {
      url.search = new URLSearchParams(data).toString();
      visit(url.href);
    } else {
      const body = form.enctype === "multipart/form-data" ? data : new URLSearchParams(data);
      visit(url.href, { method: "POST", body, form, submitter });
    }
  });

  window.addEventListener("popstate", (event) => {
    if (!event.state || !event.state.flawscope) return;
    const to = entryOf(event.state);
    visit(location.href, { history: "none", entry: to, scroll: scrolls.get(to) || 0 });
  });

  // Leaving for another document closes what the page opened (the stream); coming back from the
  // browser's back-forward cache starts it again.
  window.addEventListener("pagehide", stopPage);
  window.addEventListener("pageshow", (event) => { if (event.persisted) startPage(); });

  history.scrollRestoration = "manual";
  document.addEventListener("DOMContentLoaded", () => {
    // A reload keeps the entry it had; a new document gets a new one.
    if (entryOf(history.state) === undefined) history.replaceState({ flawscope: true, entry }, "");
    else entry = history.state.entry;
    startPage();
  });
})();

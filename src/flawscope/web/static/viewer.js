/* Fit a part's picture (and the layers over it) to the space left on the screen, small parts enlarged. */
"use strict";
(function () {
  function fit() {
    const stage = document.getElementById("stage");
    if (!stage) return;
    const width = Number(stage.dataset.width), height = Number(stage.dataset.height);
    if (!width || !height) return;
    // Read every size first, then write: one layout, not one per property.
    const box = getComputedStyle(stage.parentElement);
    const room = stage.parentElement.clientWidth - parseFloat(box.paddingLeft) - parseFloat(box.paddingRight);
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const tall = Math.max(240, window.innerHeight - Math.min(top, 200) - 24);
    const scale = Math.min(room / width, tall / height, 12);
    stage.style.width = `${Math.floor(width * scale)}px`;
    stage.style.height = `${Math.floor(height * scale)}px`;
    stage.dispatchEvent(new Event("fitted"));
  }
  window.flawscopeFit = fit;
  function start() {
    fit();
    window.addEventListener("resize", fit);
    return () => window.removeEventListener("resize", fit);
  }
  // The review page fits its picture itself (after binding the drawing layer to "fitted").
  window.flawscopePage("part", start);
})();

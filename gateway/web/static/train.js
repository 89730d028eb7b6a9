// The trainer's page: upload, compare (synchronized zoom and pan), rate by keyboard, submit,
// then straight to the next upload. What the trainer typed survives failed requests (it stays
// in the form) and reloads (sessionStorage, keyed by experiment id).
"use strict";

(function () {
  const { api, upload, el, showError, fmt } = window.Latina;

  const CURRENT_KEY = "latina:train:current";
  const PROJECT_KEY = "latina:train:project";
  const draftKey = (experimentId) => `latina:train:draft:${experimentId}`;
  const MAX_SCALE = 8;

  const $ = (id) => document.getElementById(id);
  const alertBox = $("alert");
  const savedBox = $("saved");
  const uploadSection = $("upload");
  const fileInput = $("file");
  const dropzone = $("dropzone");
  const projectInput = $("project");
  const retryButton = $("retry");
  const progressSection = $("progress");
  const progressBar = $("progress-bar");
  const progressText = $("progress-text");
  const form = $("rate-form");
  const compare = $("compare");
  const submitButton = $("submit");
  const optionTemplate = $("option-template");

  const state = {
    experiment: null, // the /api/enhance/train response being rated
    ratings: {}, // option -> 1..5
    comments: {}, // option -> text
    busy: false,
    lastFile: null,
    view: { scale: 1, x: 0, y: 0 }, // shared by every viewport; x, y are fractions of its size
  };

  // ---- storage (sessionStorage can be unavailable or full: the form still holds everything)

  function store(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, JSON.stringify(value));
    } catch (_err) {
      /* private mode or quota: nothing to do */
    }
  }

  function load(key) {
    try {
      const raw = sessionStorage.getItem(key);
      return raw ? JSON.parse(raw) : null;
    } catch (_err) {
      return null;
    }
  }

  function saveDraft() {
    if (!state.experiment) return;
    store(draftKey(state.experiment.experiment_id), {
      ratings: state.ratings,
      comments: state.comments,
    });
  }

  // ---- counters and news

  function showCounters({ samples, target, best, mlText }) {
    if (samples !== undefined) $("samples").textContent = String(samples);
    const bar = $("phase-progress");
    if (target !== undefined) bar.max = target;
    if (samples !== undefined) {
      bar.value = Math.min(samples, bar.max);
      $("phase-text").textContent = `(${Math.min(samples, bar.max)} of ${bar.max})`;
    }
    if (best !== undefined) $("best").textContent = best === null ? "–" : fmt.rating(best);
    if (mlText !== undefined) $("ml-state").textContent = mlText;
  }

  function abTestText(test) {
    if (!test) return null;
    const averages = Object.entries(test.avg || {})
      .map(([version, mean]) => `${version} ${fmt.rating(mean)}`)
      .join(", ");
    if (test.status === "decided") {
      const p = test.p_new_better === null || test.p_new_better === undefined
        ? ""
        : ` (probability the new one is better: ${Math.round(test.p_new_better * 100)} %)`;
      return `A/B test of ${test.new} against ${test.old} decided: ${test.winner || "no"} wins${p}.`;
    }
    return `A/B test of ${test.new} against ${test.old}: ${test.samples} of ${test.of} samples` +
      (averages ? ` (average ${averages}).` : ".");
  }

  function setNews(lines) {
    const list = $("news");
    list.replaceChildren(...lines.filter(Boolean).map((line) => el("li", { text: line })));
  }

  async function loadStatus() {
    try {
      const status = await api("/api/train/status");
      const ml = status.ml_service || {};
      showCounters({
        samples: status.samples_collected,
        target: status.phase_1_target,
        best: status.current_best_rating,
        mlText: ml.reachable
          ? (ml.busy ? `busy, ${ml.queued_computations || 0} computation(s) queued` : "reachable") +
            (ml.pending_updates ? `, ${ml.pending_updates} update(s) pending` : "")
          : `ML service unreachable; ${ml.pending_updates} update(s) kept for later`,
      });
      const evolution = status.prompt_evolution || {};
      setNews([
        status.phase_1_complete ? "Phase 1 is complete." : null,
        abTestText(status.ab_test),
        evolution.waiting_for_ab_test ? "A prompt evolution waits for the A/B test to finish." : null,
      ]);
    } catch (err) {
      showError(alertBox, err);
    }
  }

  function showRateResult(result) {
    const evolution = result.prompt_evolution || {};
    showCounters({
      samples: result.samples_collected,
      best: result.current_best_rating,
      mlText: result.ml_updated
        ? "updated with this sample"
        : "ML service unreachable: the update is kept and delivered later",
    });
    setNews([
      result.phase_1_complete ? "Phase 1 is complete." : null,
      evolution.triggered && !evolution.waiting_for_ab_test
        ? "Prompt evolution started: a new prompt version is being written from the recent ratings."
        : null,
      evolution.waiting_for_ab_test
        ? "Prompt evolution is due and waits for the running A/B test to finish."
        : null,
      evolution.new_version ? `New prompt version ${evolution.new_version} created.` : null,
      abTestText(evolution.ab_test),
    ]);
  }

  // ---- sections

  function showSection(name) {
    uploadSection.hidden = name !== "upload";
    progressSection.hidden = name !== "progress";
    form.hidden = name !== "rate";
  }

  function readyForUpload() {
    state.experiment = null;
    state.ratings = {};
    state.comments = {};
    fileInput.disabled = false;
    fileInput.value = "";
    showSection("upload");
    fileInput.focus();
  }

  // ---- upload

  async function startUpload(file) {
    if (state.busy || !file) return;
    if (file.type && !/^image\/(jpeg|png|webp)$/.test(file.type)) {
      showError(alertBox, new Error(
        `“${file.name}” is ${file.type}; choose a JPEG, PNG or WebP image.`));
      return;
    }
    state.busy = true;
    state.lastFile = file;
    showError(alertBox, null);
    savedBox.hidden = true;
    retryButton.hidden = true;
    fileInput.disabled = true;
    showSection("progress");
    progressBar.value = 0;
    progressText.textContent = `Uploading ${file.name}…`;
    const started = Date.now();
    let timer = null;
    const data = new FormData();
    data.append("image", file);
    data.append("project_id", projectInput.value.trim() || "default");
    try {
      const body = await upload("/api/enhance/train", data, {
        onUploadProgress: (fraction) => {
          progressBar.value = fraction;
          progressText.textContent = `Uploading ${file.name}: ${Math.round(fraction * 100)} %`;
        },
        onUploaded: () => {
          progressBar.removeAttribute("value"); // indeterminate while the providers render
          const tick = () => {
            const seconds = Math.round((Date.now() - started) / 1000);
            progressText.textContent = `Uploaded. Rendering both variants… ${seconds} s`;
          };
          tick();
          timer = window.setInterval(tick, 1000);
        },
      });
      store(CURRENT_KEY, body);
      showExperiment(body, null);
    } catch (err) {
      showError(alertBox, withProviderErrors(err));
      fileInput.disabled = false;
      showSection("upload");
      retryButton.hidden = false;
      retryButton.focus();
    } finally {
      if (timer !== null) window.clearInterval(timer);
      state.busy = false;
    }
  }

  /** "both image providers failed" says more with what each provider answered. */
  function withProviderErrors(err) {
    const details = err.code === "all_providers_failed" && err.details ? err.details : null;
    if (!details) return err;
    const reasons = Object.entries(details)
      .filter(([, e]) => e && typeof e === "object" && e.message)
      .map(([apiKey, e]) => `${window.Latina.apiName(apiKey)}: ${e.message}`);
    if (reasons.length === 0) return err;
    const message = `${err.message} (${reasons.join("; ")}). Try the upload again.`;
    return Object.assign(new Error(message), { status: err.status, code: err.code });
  }

  fileInput.addEventListener("change", () => startUpload(fileInput.files[0]));
  retryButton.addEventListener("click", () => startUpload(state.lastFile));
  projectInput.value = localStorage.getItem(PROJECT_KEY) || projectInput.value;
  projectInput.addEventListener("change", () => {
    localStorage.setItem(PROJECT_KEY, projectInput.value.trim() || "default");
  });

  // Dropping anywhere on the page uploads (and never navigates away to the file).
  document.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    if (!uploadSection.hidden) dropzone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (ev) => {
    if (ev.relatedTarget === null) dropzone.classList.remove("dragging");
  });
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dropzone.classList.remove("dragging");
    if (uploadSection.hidden || state.busy) return;
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) startUpload(file);
  });

  // ---- the comparison

  function optionCards() {
    return Array.from(compare.querySelectorAll(".option"));
  }

  function rateableCards() {
    return optionCards().filter((card) => card.classList.contains("rateable"));
  }

  function buildOption(option) {
    const card = optionTemplate.content.firstElementChild.cloneNode(true);
    const name = option.option;
    card.dataset.option = name;
    card.dataset.testid = `option-${name}`;
    card.setAttribute("aria-label", `Option ${name}`);
    card.querySelector(".option-title").textContent = `Option ${name}`;
    card.querySelector(".rating").setAttribute("aria-label", `Rating of option ${name}, 1 to 5`);
    const comment = card.querySelector(".comment");
    comment.setAttribute("aria-label", `Comment on option ${name}`);
    const details = [
      window.Latina.apiName(option.api),
      option.provider ? `rendered by ${option.provider}` : null,
      option.strategy ? `strategy ${option.strategy}` : null,
      option.prompt_version ? `prompt ${option.prompt_version}` : null,
    ].filter(Boolean).join(" · ");
    card.querySelector(".option-api").textContent = details;
    card.querySelector(".option-details").append(window.Latina.paramList(option.parameters));
    const img = card.querySelector("img");
    if (option.error || !option.url) {
      card.classList.add("failed");
      card.tabIndex = -1;
      card.querySelector(".viewport").hidden = true;
      card.querySelector(".rating").hidden = true;
      card.querySelector(".comment-label").hidden = true;
      comment.hidden = true;
      const message = (option.error && option.error.message) || "no image was rendered";
      const failed = card.querySelector(".failed");
      failed.textContent =
        `Option ${name} failed to render: ${message}. It is not rated; rate the other option.`;
      failed.hidden = false;
      card.querySelector(".option-rating-text").textContent = "failed";
      return card;
    }
    card.classList.add("rateable");
    img.alt = `Option ${name}`;
    img.src = option.url;
    watchImage(img);
    for (const button of card.querySelectorAll(".star")) {
      button.setAttribute("aria-label", `Rate option ${name} ${button.dataset.value} of 5`);
      button.addEventListener("click", () => {
        setRating(name, Number(button.dataset.value));
        card.focus();
      });
    }
    comment.addEventListener("input", () => {
      state.comments[name] = comment.value;
      saveDraft();
    });
    return card;
  }

  function watchImage(img) {
    img.addEventListener("error", () => {
      const viewport = img.closest(".viewport");
      viewport.classList.add("broken");
      viewport.dataset.message = "The image could not be loaded.";
    });
  }

  function showExperiment(experiment, draft) {
    state.experiment = experiment;
    state.ratings = {};
    state.comments = {};
    for (const card of optionCards()) card.remove();
    const original = $("original-image");
    original.src = experiment.original.url;
    watchImage(original);
    $("original-meta").textContent = `project ${experiment.project_id}`;
    for (const option of experiment.options) compare.append(buildOption(option));
    const saved = draft || load(draftKey(experiment.experiment_id)) || {};
    for (const [name, value] of Object.entries(saved.ratings || {})) setRating(name, value, false);
    for (const [name, text] of Object.entries(saved.comments || {})) {
      const card = compare.querySelector(`.option.rateable[data-option="${name}"]`);
      if (!card) continue;
      card.querySelector(".comment").value = text;
      state.comments[name] = text;
    }
    resetView();
    showSection("rate");
    submitButton.disabled = false;
    const first = rateableCards().find((card) => !state.ratings[card.dataset.option]);
    (first || rateableCards()[0] || submitButton).focus();
  }

  function setRating(name, value, persist = true) {
    const card = compare.querySelector(`.option.rateable[data-option="${name}"]`);
    if (!card || !(value >= 1 && value <= 5)) return;
    state.ratings[name] = value;
    card.classList.add("rated");
    for (const button of card.querySelectorAll(".star")) {
      const v = Number(button.dataset.value);
      button.setAttribute("aria-pressed", String(v === value));
      button.classList.toggle("filled", v <= value);
    }
    card.querySelector(".option-rating-text").textContent = `${value} / 5`;
    if (persist) saveDraft();
  }

  function moveFocus(from, step) {
    const cards = rateableCards();
    if (cards.length === 0) return;
    const index = cards.indexOf(from);
    const next = index < 0 ? 0 : (index + step + cards.length) % cards.length;
    cards[next].focus();
  }

  // ---- synchronized zoom and pan

  function clampView() {
    const v = state.view;
    v.scale = Math.min(MAX_SCALE, Math.max(1, v.scale));
    v.x = Math.min(0, Math.max(1 - v.scale, v.x));
    v.y = Math.min(0, Math.max(1 - v.scale, v.y));
  }

  function applyView() {
    clampView();
    const { scale, x, y } = state.view;
    const transform = `translate(${x * 100}%, ${y * 100}%) scale(${scale})`;
    for (const img of compare.querySelectorAll(".viewport img")) img.style.transform = transform;
    compare.classList.toggle("zoomed", scale > 1);
  }

  function resetView() {
    state.view = { scale: 1, x: 0, y: 0 };
    applyView();
  }

  /** Zoom by ``factor`` keeping the point (px, py) (fractions of the viewport) in place. */
  function zoomAt(factor, px = 0.5, py = 0.5) {
    const v = state.view;
    const scale = Math.min(MAX_SCALE, Math.max(1, v.scale * factor));
    const ratio = scale / v.scale;
    v.x = px - (px - v.x) * ratio;
    v.y = py - (py - v.y) * ratio;
    v.scale = scale;
    applyView();
  }

  compare.addEventListener("wheel", (ev) => {
    const viewport = ev.target.closest(".viewport");
    if (!viewport) return;
    ev.preventDefault();
    const rect = viewport.getBoundingClientRect();
    const factor = Math.exp(-ev.deltaY * 0.002);
    zoomAt(factor, (ev.clientX - rect.left) / rect.width, (ev.clientY - rect.top) / rect.height);
  }, { passive: false });

  let drag = null;
  compare.addEventListener("pointerdown", (ev) => {
    const viewport = ev.target.closest(".viewport");
    if (!viewport || ev.button !== 0) return;
    ev.preventDefault();
    viewport.setPointerCapture(ev.pointerId);
    drag = { viewport, x: ev.clientX, y: ev.clientY };
    compare.classList.add("dragging");
  });
  compare.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const rect = drag.viewport.getBoundingClientRect();
    state.view.x += (ev.clientX - drag.x) / rect.width;
    state.view.y += (ev.clientY - drag.y) / rect.height;
    drag.x = ev.clientX;
    drag.y = ev.clientY;
    applyView();
  });
  const endDrag = () => {
    drag = null;
    compare.classList.remove("dragging");
  };
  compare.addEventListener("pointerup", endDrag);
  compare.addEventListener("pointercancel", endDrag);
  compare.addEventListener("dblclick", (ev) => {
    if (ev.target.closest(".viewport")) resetView();
  });
  $("zoom-reset").addEventListener("click", resetView);

  // ---- keyboard

  document.addEventListener("keydown", (ev) => {
    if (form.hidden || ev.altKey) return;
    const target = ev.target instanceof Element ? ev.target : document.body;
    if (target.matches("textarea.comment")) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        submit();
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        target.closest(".option").focus();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || target.matches("input, select, textarea")) return;
    const card = target.closest(".option.rateable");
    if (/^[1-5]$/.test(ev.key)) {
      if (card) {
        ev.preventDefault();
        setRating(card.dataset.option, Number(ev.key));
      }
    } else if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      ev.preventDefault();
      moveFocus(card, ev.key === "ArrowRight" ? 1 : -1);
    } else if ((ev.key === "c" || ev.key === "C") && card) {
      ev.preventDefault();
      card.querySelector(".comment").focus();
    } else if (ev.key === "Enter") {
      if (target.matches("button") && target !== submitButton && !target.matches(".star")) return;
      ev.preventDefault();
      submit();
    } else if (ev.key === "+" || ev.key === "=") {
      zoomAt(1.25);
    } else if (ev.key === "-") {
      zoomAt(0.8);
    } else if (ev.key === "0") {
      resetView();
    }
  });

  // ---- submit

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit();
  });

  async function submit() {
    const experiment = state.experiment;
    if (state.busy || !experiment) return;
    const rateable = experiment.options.filter((o) => o.image_id !== undefined && !o.error);
    const missing = rateable.filter((o) => !state.ratings[o.option]);
    if (missing.length > 0) {
      const names = missing.map((o) => `option ${o.option}`).join(" and ");
      showError(alertBox, new Error(`Rate ${names} (keys 1–5) before submitting.`));
      const card = compare.querySelector(`.option.rateable[data-option="${missing[0].option}"]`);
      if (card) card.focus();
      return;
    }
    state.busy = true;
    submitButton.disabled = true;
    showError(alertBox, null);
    const focused = document.activeElement;
    try {
      const result = await api("/api/train/rate", {
        method: "POST",
        json: {
          experiment_id: experiment.experiment_id,
          ratings: rateable.map((o) => ({
            option: o.option,
            image_id: o.image_id,
            rating: state.ratings[o.option],
            comments: (state.comments[o.option] || "").trim(),
          })),
        },
      });
      store(draftKey(experiment.experiment_id), null);
      store(CURRENT_KEY, null);
      showRateResult(result);
      savedBox.textContent =
        `Sample ${result.samples_collected} saved. Choose the next image (Enter opens the picker).`;
      savedBox.hidden = false;
      readyForUpload();
    } catch (err) {
      // everything typed stays in the form (and in sessionStorage) for another try
      showError(alertBox, err);
      submitButton.disabled = false;
      if (focused instanceof HTMLElement && document.contains(focused)) focused.focus();
    } finally {
      state.busy = false;
    }
  }

  $("discard").addEventListener("click", () => {
    if (state.experiment) store(draftKey(state.experiment.experiment_id), null);
    store(CURRENT_KEY, null);
    showError(alertBox, null);
    readyForUpload();
  });

  // ---- start: resume an unrated experiment after a reload, else wait for an upload

  loadStatus();
  const current = load(CURRENT_KEY);
  if (current && current.experiment_id && Array.isArray(current.options)) {
    showExperiment(current, null);
  } else {
    readyForUpload();
  }
})();

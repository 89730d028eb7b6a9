// History: experiments newest first, keyset-paginated through next_cursor, with filters kept in
// the page's URL (so a filtered view can be bookmarked or shared).
"use strict";

(function () {
  const { api, el, showError, fmt, paramList, apiName } = window.Latina;
  const $ = (id) => document.getElementById(id);
  const PAGE_SIZE = 12;
  const FILTERS = ["project_id", "trainer", "min_rating", "max_rating"];
  const form = $("filters");
  const grid = $("grid");
  const more = $("more");
  const alertBox = $("alert");
  let cursor = null;
  let shown = 0;
  let generation = 0; // a new filter starts a new generation; older answers are dropped

  function filtersFromUrl() {
    const params = new URLSearchParams(window.location.search);
    for (const name of FILTERS) form.elements[name].value = params.get(name) || "";
  }

  function currentFilters() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    return params;
  }

  function thumb(url, alt, caption) {
    return el("figure", { class: "thumb" },
      el("a", { attrs: { href: url, target: "_blank", rel: "noopener" } },
        el("img", { attrs: { src: url, alt, loading: "lazy", width: 200, height: 150 } })),
      el("figcaption", { text: caption }));
  }

  function optionBlock(option) {
    const rated = option.rating !== null && option.rating !== undefined;
    return el("div", { class: "history-option", dataset: { option: option.option } },
      thumb(option.url, `Option ${option.option}`, `Option ${option.option} · ${apiName(option.api)}`),
      el("p", { class: "rating-line" },
        el("strong", { text: rated ? `${option.rating} / 5` : "not rated" }),
        el("span", { class: "hint", text: ` ${option.provider}${option.strategy ? ` · ${option.strategy}` : ""}` })),
      option.comments
        ? el("blockquote", { class: "comment", text: option.comments })
        : null,
      el("details", {}, el("summary", { text: "Parameters" }), paramList(option.parameters)));
  }

  function card(item) {
    const rater = item.rated_by_name || item.rated_by;
    const title = item.sample_number ? `Sample ${item.sample_number}` : "Not rated yet";
    return el("article", { class: "experiment card", dataset: { experiment: item.experiment_id } },
      el("header", {},
        el("h2", { text: title }),
        el("p", { class: "hint" },
          el("time", { text: fmt.dateTime(item.created_at), attrs: { datetime: item.created_at } }),
          ` · project ${item.project_id} · prompt ${item.prompt_version}`)),
      el("p", { class: "rater" },
        rater
          ? `Rated by ${rater}${item.rated_at ? ` on ${fmt.dateTime(item.rated_at)}` : ""}`
          : `Uploaded by ${item.created_by || "unknown"}, not rated`),
      el("div", { class: "experiment-images" },
        el("div", { class: "history-option original" },
          thumb(item.original.url, "Original", "Original")),
        ...(item.options || []).map(optionBlock)),
      el("p", { class: "hint mono", text: item.experiment_id }));
  }

  async function loadPage(reset) {
    const params = currentFilters();
    const min = Number(params.get("min_rating") || 1);
    const max = Number(params.get("max_rating") || 5);
    if (min > max) {
      showError(alertBox, new Error("“Rating from” must not be above “to”."));
      return;
    }
    if (reset) {
      generation += 1;
      cursor = null;
    }
    const mine = generation;
    params.set("limit", String(PAGE_SIZE));
    if (cursor) params.set("cursor", cursor);
    more.disabled = true;
    grid.setAttribute("aria-busy", "true");
    try {
      const page = await api(`/api/train/history?${params}`);
      if (mine !== generation) return;
      showError(alertBox, null);
      const cards = (page.items || []).map(card);
      if (reset) {
        grid.replaceChildren(...cards);
        shown = 0;
      } else {
        grid.append(...cards);
      }
      shown += cards.length;
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      $("summary").textContent = shown === 0
        ? "No experiments match these filters."
        : `Showing ${shown} experiment${shown === 1 ? "" : "s"}${cursor ? "; older ones below" : ""}.`;
    } catch (err) {
      if (mine === generation) showError(alertBox, err);
    } finally {
      if (mine === generation) {
        more.disabled = false;
        grid.setAttribute("aria-busy", "false");
        document.body.dataset.loaded = "true";
      }
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const query = currentFilters().toString();
    window.history.replaceState(null, "", query ? `/history?${query}` : "/history");
    loadPage(true);
  });
  $("clear-filters").addEventListener("click", () => {
    form.reset();
    window.history.replaceState(null, "", "/history");
    loadPage(true);
  });
  more.addEventListener("click", () => loadPage(false));

  filtersFromUrl();
  loadPage(true);
})();

// The learning dashboard: charts (Chart.js, from npm) and tables over /api/train/status
// (including the phase 2 reward model and its prediction errors), /api/prompts and /api/ab_tests.
"use strict";

(function () {
  const { api, el, showError, fmt, paramList, apiName } = window.Latina;
  const $ = (id) => document.getElementById(id);
  const ROLLING = 5;
  const COLORS = {
    rating: "#7a93b8",
    rolling: "#1f4e8c",
    best: "#c0612b",
    leonardo: "#1f4e8c",
    stable_diffusion: "#c0612b",
    predicted: "#6b8f3a",
  };
  const charts = {};
  const alertBox = $("alert");

  function chartsAvailable() {
    return typeof window.Chart === "function";
  }

  /** Create the chart on first use, then only swap its data (no flicker on refresh). */
  function drawChart(canvasId, config) {
    if (!chartsAvailable()) {
      const box = $(canvasId).parentElement;
      if (!box.querySelector(".chart-missing")) {
        box.append(el("p", {
          class: "chart-missing notice error",
          text: "The charting library could not be loaded (front-end libraries are installed by " +
            "`make install`). The figures are in the tables.",
        }));
      }
      return null;
    }
    const existing = charts[canvasId];
    if (existing) {
      existing.data = config.data;
      existing.update();
      return existing;
    }
    charts[canvasId] = new window.Chart($(canvasId), config);
    return charts[canvasId];
  }

  function rollingMean(values, size) {
    return values.map((_, i) => {
      const window = values.slice(Math.max(0, i - size + 1), i + 1).filter((v) => v !== null);
      return window.length ? window.reduce((a, b) => a + b, 0) / window.length : null;
    });
  }

  const ratingAxis = { min: 1, max: 5, ticks: { stepSize: 1 }, title: { display: true, text: "rating" } };

  function mlState(ml) {
    if (!ml.reachable) return "unreachable";
    return ml.busy ? `busy: ${ml.queued_computations || 0} computation(s) queued` : "reachable";
  }

  function renderSummary(status) {
    const ml = status.ml_service || {};
    $("sum-samples").textContent = String(status.samples_collected);
    $("sum-phase").textContent = status.phase_1_complete
      ? `2 (phase 1 complete at ${status.phase_1_target})`
      : `1 (${status.samples_collected} of ${status.phase_1_target})`;
    $("sum-best").textContent = fmt.rating(status.current_best_rating);
    $("sum-ml").textContent = mlState(ml);
    $("sum-ml").classList.toggle("bad", !ml.reachable);
    $("sum-pending").textContent = String(ml.pending_updates ?? "–");
  }

  function renderCurve(curve) {
    $("window").textContent = String(ROLLING);
    $("curve-empty").hidden = curve.length > 0;
    const ratings = curve.map((p) => p.avg_rating);
    drawChart("curve-chart", {
      type: "line",
      data: {
        labels: curve.map((p) => p.sample),
        datasets: [
          {
            label: "rating of the sample",
            data: ratings,
            borderColor: COLORS.rating,
            backgroundColor: COLORS.rating,
            showLine: false,
            pointRadius: 4,
            pointHoverRadius: 6,
          },
          {
            label: `rolling mean (${ROLLING})`,
            data: rollingMean(ratings, ROLLING),
            borderColor: COLORS.rolling,
            backgroundColor: COLORS.rolling,
            pointRadius: 0,
            tension: 0.25,
          },
          {
            label: "best so far",
            data: curve.map((p) => p.best_so_far),
            borderColor: COLORS.best,
            backgroundColor: COLORS.best,
            pointRadius: 0,
            stepped: true,
          },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { title: { display: true, text: "sample" } }, y: ratingAxis },
      },
    });
  }

  function renderApis(perApi) {
    const apis = Object.keys(perApi);
    drawChart("api-chart", {
      type: "bar",
      data: {
        labels: apis.map(apiName),
        datasets: [
          {
            label: "average rating",
            data: apis.map((a) => perApi[a].avg_rating),
            backgroundColor: COLORS.rolling,
          },
          {
            label: "predicted best",
            data: apis.map((a) => perApi[a].predicted_best_rating),
            backgroundColor: COLORS.predicted,
          },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { y: { ...ratingAxis, min: 0 } },
      },
    });
    const table = el("table", { class: "figures-table" },
      el("thead", {}, el("tr", {},
        el("th", { text: "API", attrs: { scope: "col" } }),
        el("th", { text: "samples", attrs: { scope: "col" } }),
        el("th", { text: "average", attrs: { scope: "col" } }),
        el("th", { text: "best rating", attrs: { scope: "col" } }),
        el("th", { text: "predicted best", attrs: { scope: "col" } }))),
      el("tbody", {}, apis.map((a) => el("tr", {},
        el("th", { text: apiName(a), attrs: { scope: "row" } }),
        el("td", { text: perApi[a].samples }),
        el("td", { text: fmt.rating(perApi[a].avg_rating) }),
        el("td", { text: fmt.rating(perApi[a].best_rating, 0) }),
        el("td", { text: predicted(perApi[a]) })))));
    $("api-table").replaceChildren(table);
  }

  function predicted(figures) {
    if (figures.predicted_best_rating === null || figures.predicted_best_rating === undefined) {
      return "–";
    }
    const spread = figures.uncertainty === null || figures.uncertainty === undefined
      ? ""
      : ` ± ${fmt.rating(figures.uncertainty)}`;
    return `${fmt.rating(figures.predicted_best_rating)}${spread}`;
  }

  function renderBest(perApi) {
    const blocks = Object.entries(perApi).map(([a, figures]) => el("div", { class: "best-api" },
      el("h3", { text: apiName(a) }),
      el("p", { class: "predicted" }, "predicted rating ",
        el("strong", { text: predicted(figures), dataset: { testid: `predicted-${a}` } })),
      figures.best_parameters
        ? paramList(figures.best_parameters)
        : el("p", { class: "hint", text: "No parameters rated yet." })));
    $("best-params").replaceChildren(...blocks);
  }

  function renderImportance(perApi) {
    // rebuilt on every refresh: a chart stays bound to the canvas (and parent) it was made on
    for (const id of Object.keys(charts).filter((k) => k.startsWith("importance-"))) {
      charts[id].destroy();
      delete charts[id];
    }
    const blocks = [];
    const pending = [];
    for (const [a, figures] of Object.entries(perApi)) {
      const entries = Object.entries(figures.importance || {}).sort((x, y) => y[1] - x[1]);
      const block = el("div", { class: "importance-api" }, el("h3", { text: apiName(a) }));
      blocks.push(block);
      if (entries.length === 0) {
        block.append(el("p", {
          class: "hint",
          text: "Not enough data yet: the model needs more rated samples of this API.",
          dataset: { testid: `importance-empty-${a}` },
        }));
        continue;
      }
      const canvasId = `importance-${a}`;
      block.append(el("div", { class: "chart-box short" }, el("canvas", {
        attrs: { id: canvasId, role: "img", "aria-label": `Parameter importance for ${apiName(a)}` },
      })));
      pending.push({ canvasId, entries });
    }
    $("importance").replaceChildren(...blocks);
    for (const { canvasId, entries } of pending) {
      drawChart(canvasId, {
        type: "bar",
        data: {
          labels: entries.map(([name]) => name),
          datasets: [{
            label: "importance",
            data: entries.map(([, value]) => value),
            backgroundColor: COLORS.rolling,
          }],
        },
        options: {
          indexAxis: "y",
          animation: false,
          maintainAspectRatio: false,
          plugins: { legend: { display: false } },
          scales: { x: { min: 0, max: 1, title: { display: true, text: "relative importance" } } },
        },
      });
    }
  }

  const finite = (v) => typeof v === "number" && Number.isFinite(v);

  /** Per distinct sample: the mean |error| over the shown options of the last `size` samples. */
  function rollingAbsError(points, size) {
    const samples = [...new Set(points.map((p) => p.sample))];
    return samples.map((sample, i) => {
      const recent = new Set(samples.slice(Math.max(0, i - size + 1), i + 1));
      const errors = points.filter((p) => recent.has(p.sample)).map((p) => Math.abs(p.error));
      return { x: sample, y: errors.reduce((a, b) => a + b, 0) / errors.length };
    });
  }

  function renderRewardModel(reward) {
    const trained = reward.trained === true;
    $("rm-trained").textContent = trained ? "trained" : "Not trained yet (it trains after phase 1)";
    $("rm-trained").classList.toggle("pending", !trained);
    $("rm-version").textContent = reward.version ? String(reward.version) : "–";
    $("rm-samples").textContent = String(reward.samples ?? "–");
    $("rm-accuracy").textContent = finite(reward.pairwise_accuracy)
      ? `${(reward.pairwise_accuracy * 100).toFixed(1)} %`
      : "–";
    $("rm-mae").textContent = fmt.rating(reward.mae);
    $("rm-live-mae").textContent = fmt.rating(reward.mean_abs_error);
    $("rm-window").textContent = String(ROLLING);

    const points = (Array.isArray(reward.prediction_errors) ? reward.prediction_errors : [])
      .filter((p) => p && finite(p.sample) && finite(p.error));
    $("rm-empty").hidden = points.length > 0;
    $("rm-chart").hidden = points.length === 0;
    if (points.length === 0) return;
    const apis = [...new Set(points.map((p) => p.api || "unknown"))];
    drawChart("rm-error-chart", {
      type: "scatter",
      data: {
        datasets: [
          ...apis.map((a) => ({
            label: `${apiName(a)}: rating − predicted`,
            data: points.filter((p) => (p.api || "unknown") === a).map((p) => ({
              x: p.sample,
              y: p.error,
              option: p.option,
              predicted: p.predicted,
              actual: p.actual,
            })),
            borderColor: COLORS[a] || COLORS.rating,
            backgroundColor: COLORS[a] || COLORS.rating,
            pointRadius: 4,
            pointHoverRadius: 6,
          })),
          {
            label: `mean absolute error (last ${ROLLING} samples)`,
            data: rollingAbsError(points, ROLLING),
            borderColor: COLORS.predicted,
            backgroundColor: COLORS.predicted,
            showLine: true,
            pointRadius: 0,
            tension: 0.25,
          },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: {
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const r = ctx.raw || {};
                return r.option === undefined
                  ? `${ctx.dataset.label}: ${fmt.rating(r.y)}`
                  : `sample ${r.x}, option ${r.option}: rated ${r.actual ?? "?"}, ` +
                    `predicted ${fmt.rating(r.predicted)} (error ${fmt.rating(r.y)})`;
              },
            },
          },
        },
        scales: {
          // offset: the first and last samples' points are not cut in half by the chart's edge
          x: {
            type: "linear",
            offset: true,
            ticks: { precision: 0 },
            title: { display: true, text: "sample" },
          },
          y: { suggestedMin: -2, suggestedMax: 2, title: { display: true, text: "rating − predicted" } },
        },
      },
    });
  }

  function abTestLine(test) {
    const versions = test.versions || {};
    const figures = [test.old, test.new].map((v) => {
      const f = versions[v] || {};
      const mean = (test.avg || {})[v];
      return `${v}: ${f.n ?? "?"} sample(s), mean ${fmt.rating(mean)}`;
    }).join("; ");
    const outcome = test.status === "decided"
      ? `decided, winner ${test.winner || "none"}` +
        (test.p_new_better === null || test.p_new_better === undefined
          ? ""
          : `, probability the new one is better ${Math.round(test.p_new_better * 100)} %`) +
        (test.promoted ? ", promoted" : "")
      : `${test.status}, ${test.samples} of ${test.of} samples`;
    return `A/B test #${test.id} against ${test.old}: ${outcome}. ${figures}.` +
      (test.note ? ` ${test.note}` : "");
  }

  function versionNode(item, children, testsByNew) {
    const badges = [
      item.is_current ? el("span", { class: "badge current", text: "current" }) : null,
      el("span", { class: "badge", text: item.origin }),
      item.status ? el("span", { class: "badge", text: item.status }) : null,
    ];
    const node = el("li", { dataset: { version: item.version } },
      el("div", { class: "version-head" },
        el("strong", { class: "version", text: item.version }), ...badges,
        el("span", {
          class: "hint",
          text: `score ${fmt.rating(item.performance_score)} · used ${item.usage_count}× · ` +
            fmt.dateTime(item.created_at),
        })));
    if (item.changes && item.changes.length) {
      node.append(el("ul", { class: "changes" }, item.changes.map((c) => el("li", { text: c }))));
    }
    if (item.reasoning) node.append(el("p", { class: "reasoning", text: item.reasoning }));
    for (const test of testsByNew.get(item.version) || []) {
      node.append(el("p", { class: "ab-result", text: abTestLine(test) }));
    }
    node.append(el("details", {},
      el("summary", { text: "Prompt text" }),
      el("p", { class: "prompt-text", text: item.prompt }),
      item.negative_prompt
        ? el("p", { class: "prompt-text negative", text: `Negative: ${item.negative_prompt}` })
        : null));
    if (children.length) node.append(el("ul", { class: "tree" }, children));
    return node;
  }

  function renderPrompts(status, library, abTests) {
    const items = library.items || [];
    const current = items.find((i) => i.is_current);
    const cp = status.current_prompt;
    $("current-prompt").replaceChildren(
      current
        ? el("div", {},
          el("p", {},
            el("strong", { text: current.version }),
            cp ? ` · score ${fmt.rating(cp.performance_score)} · used ${cp.usage_count}×` : ""),
          el("p", { class: "prompt-text", text: current.prompt }),
          current.negative_prompt
            ? el("p", { class: "prompt-text negative", text: `Negative: ${current.negative_prompt}` })
            : null)
        : el("p", { class: "hint", text: "No current prompt version." }),
    );
    const testsByNew = new Map();
    for (const test of abTests.items || []) {
      if (!testsByNew.has(test.new)) testsByNew.set(test.new, []);
      testsByNew.get(test.new).push(test);
    }
    const known = new Set(items.map((i) => i.version));
    const byParent = new Map();
    for (const item of items) {
      const parent = item.parent_version && known.has(item.parent_version)
        ? item.parent_version
        : null;
      if (!byParent.has(parent)) byParent.set(parent, []);
      byParent.get(parent).push(item);
    }
    const build = (parent, depth) => (byParent.get(parent) || []).map((item) =>
      versionNode(item, depth > 50 ? [] : build(item.version, depth + 1), testsByNew));
    const roots = build(null, 0);
    $("lineage").replaceChildren(
      roots.length ? el("ul", { class: "tree" }, roots) : el("p", { class: "hint", text: "No versions." }),
    );
  }

  function renderHealth(status) {
    const ml = status.ml_service || {};
    const evolution = status.prompt_evolution || {};
    const last = evolution.last_round;
    const rows = [
      ["ML service", ml.reachable ? mlState(ml) : "unreachable: ratings are kept and delivered later"],
      ["Updates waiting for delivery", String(ml.pending_updates ?? "–")],
      ["Last evolution round", last
        ? `at sample ${last.sample}: ${last.status}` +
          (last.new_version ? `, wrote ${last.new_version}` : "") +
          (last.evolver ? ` (${last.evolver})` : "")
        : "none yet"],
    ];
    if (last && last.fallback_reason) rows.push(["Fell back to the heuristic", last.fallback_reason]);
    if (last && last.error) rows.push(["Error", last.error]);
    if (evolution.waiting_for_ab_test) rows.push(["Waiting", "for the running A/B test"]);
    if (status.ab_test) rows.push(["Running A/B test", abTestLine(status.ab_test)]);
    $("health").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  async function refresh() {
    const button = $("refresh");
    button.disabled = true;
    const [status, library, abTests] = await Promise.allSettled([
      api("/api/train/status"),
      api("/api/prompts"),
      api("/api/ab_tests"),
    ]);
    const failed = [status, library, abTests].find((r) => r.status === "rejected");
    showError(alertBox, failed ? failed.reason : null);
    if (status.status === "fulfilled") {
      const s = status.value;
      renderSummary(s);
      renderCurve(s.learning_curve || []);
      renderApis(s.per_api || {});
      renderBest(s.per_api || {});
      renderImportance(s.per_api || {});
      renderHealth(s);
      renderRewardModel(s.reward_model || {});
      if (library.status === "fulfilled") {
        renderPrompts(s, library.value, abTests.status === "fulfilled" ? abTests.value : { items: [] });
      }
    }
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    button.disabled = false;
    document.body.dataset.loaded = "true";
  }

  $("refresh").addEventListener("click", refresh);
  refresh();
})();

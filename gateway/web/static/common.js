// Shared by every page: the JSON API client (CSRF header, errors in words) and a DOM builder
// that only ever sets text (user content is never parsed as HTML).
"use strict";

(function () {
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  class ApiError extends Error {
    constructor(message, { status = 0, code = "error", details = null } = {}) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  function errorFrom(status, data) {
    const error = data && typeof data === "object" ? data.error : null;
    if (status === 401) {
      return new ApiError(
        "Your login has ended. Log in again in another tab, then retry: what you typed here is kept.",
        { status, code: (error && error.code) || "unauthenticated" },
      );
    }
    let message = error && error.message
      ? error.message
      : `The server answered ${status} without an explanation.`;
    if (error && error.hint) message += ` (${error.hint})`;
    if (status === 413 && !(error && error.message)) message = "The file is too large to upload.";
    return new ApiError(message, {
      status,
      code: (error && error.code) || `http_${status}`,
      details: (error && error.details) || null,
    });
  }

  function parseBody(text) {
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (_err) {
      return null;
    }
  }

  /** fetch() a JSON route; state-changing methods carry the session's CSRF token. */
  async function api(path, { method = "GET", json, body } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    } catch (err) {
      throw new ApiError(
        `Could not reach the Latina server (${err.message}). Check the connection and try again.`,
        { code: "network_error" },
      );
    }
    const data = parseBody(await response.text());
    if (!response.ok) throw errorFrom(response.status, data);
    return data;
  }

  /** POST multipart form data with upload progress (fetch has none): resolves to the JSON. */
  function upload(path, formData, { onUploadProgress, onUploaded } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.upload.addEventListener("progress", (ev) => {
        if (onUploadProgress && ev.lengthComputable) onUploadProgress(ev.loaded / ev.total);
      });
      xhr.upload.addEventListener("load", () => onUploaded && onUploaded());
      xhr.addEventListener("load", () => {
        const data = parseBody(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else reject(errorFrom(xhr.status, data));
      });
      xhr.addEventListener("error", () =>
        reject(new ApiError(
          "The upload did not reach the Latina server. Check the connection and try again.",
          { code: "network_error" },
        )));
      xhr.addEventListener("abort", () =>
        reject(new ApiError("The upload was cancelled.", { code: "aborted" })));
      xhr.send(formData);
    });
  }

  /**
   * el("p", {class: "x", text: "hello", attrs: {title: "t"}, dataset: {id: 1}}, child, ...)
   * Strings among the children become text nodes.
   */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    if (props.class) node.className = props.class;
    if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
    for (const [name, value] of Object.entries(props.attrs || {})) {
      if (value !== undefined && value !== null && value !== false) {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const [name, value] of Object.entries(props.dataset || {})) node.dataset[name] = value;
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Show an error (or clear it with null) in a role=alert box; 401 adds a link to log in. */
  function showError(box, err) {
    box.replaceChildren();
    if (!err) {
      box.hidden = true;
      return;
    }
    box.append(el("span", { text: err.message || String(err) }));
    if (err.status === 401) {
      const next = window.location.pathname + window.location.search;
      box.append(" ", el("a", {
        text: "Log in",
        attrs: { href: `/login?next=${encodeURIComponent(next)}`, target: "_blank", rel: "noopener" },
      }));
    }
    box.hidden = false;
  }

  function rating(value, digits = 2) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }

  function paramValue(value) {
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
    return String(value);
  }

  function dateTime(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  /** A <dl> of parameter name -> value. */
  function paramList(parameters) {
    const list = el("dl", { class: "params-list" });
    for (const [name, value] of Object.entries(parameters || {})) {
      list.append(el("dt", { text: name }), el("dd", { text: paramValue(value) }));
    }
    return list;
  }

  const API_NAMES = { leonardo: "Leonardo", stable_diffusion: "Stable Diffusion" };

  window.Latina = {
    api,
    upload,
    ApiError,
    el,
    showError,
    csrfToken,
    fmt: { rating, paramValue, dateTime },
    paramList,
    apiName: (api) => API_NAMES[api] || api,
  };
})();

// kbrelease web page: search text and images, see the releases. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("kbrelease-token") || "",
  releases: null,
  live: null,
  image: null,
  last: null, // the last search, re-run when the live release changes
};

// --- API ---------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
  }
}

async function api(path, options = {}, retried = false) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401 && !retried && (await askToken())) return api(path, options, true);
  const type = resp.headers.get("content-type") || "";
  const body = type.includes("json") ? await resp.json() : null;
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token").value = "";
    const done = (ok) => {
      dialog.close();
      if (ok && $("token").value) {
        state.token = $("token").value;
        sessionStorage.setItem("kbrelease-token", state.token);
      }
      resolve(ok && !!state.token);
    };
    $("token-form").onsubmit = (ev) => { ev.preventDefault(); done(true); };
    $("token-cancel").onclick = () => done(false);
    dialog.showModal();
  });
}

// --- releases ----------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function totals(release) {
  let files = 0, rows = 0;
  for (const counts of Object.values(release.sources || {})) { files += counts.files; rows += counts.rows; }
  return { files, rows };
}

async function loadReleases() {
  let data;
  try {
    data = await api("api/v1/releases");
  } catch (err) {
    $("live").className = "live bad";
    $("live-text").textContent = err.status === 401 || err.status === 403 ? "token needed" : "service unreachable";
    return;
  }
  const previous = state.live;
  state.releases = data;
  state.live = data.live;
  $("env").textContent = `· ${data.environment}`;
  $("live").className = data.live ? "live ok" : "live bad";
  $("live-text").textContent = data.live ? `live: ${data.live}` : "nothing live";
  $("switched").textContent = data.switched_at ? `Switched ${new Date(data.switched_at).toLocaleString()}` : "";

  const rows = $("release-rows");
  rows.replaceChildren();
  const list = [...data.releases].reverse();
  if (!list.length) rows.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "no releases yet — run kbrelease publish" })));
  for (const r of list) {
    const t = totals(r);
    const tr = el("tr", { class: r.state === "live" ? "is-live" : "", "data-release": r.name },
      el("td", { text: r.name }),
      el("td", {}, el("span", { class: `state ${r.state}`, text: r.state })),
      el("td", { class: "num", text: t.files.toLocaleString() }),
      el("td", { class: "num", text: t.rows.toLocaleString() }),
      recallCell(r.quality));
    tr.title = Object.entries(r.sources).map(([n, c]) => `${n} (${c.modality}): ${c.files} files, ${c.rows} rows`).join("\n");
    rows.append(tr);
  }
  fillReleaseSelect(list);
  fillSources();
  if (previous && data.live && previous !== data.live) {
    notice(`The live release is now ${data.live} (was ${previous}).`);
    if (state.last && !$("release").value) runSearch(state.last);
  }
}

function fillReleaseSelect(list) {
  const select = $("release");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: state.live ? `Live (${state.live})` : "Live" }));
  for (const r of list) {
    if (["live", "registered", "importing", "building", "dropped", "failed"].includes(r.state)) continue;
    select.append(el("option", { value: r.name, text: `${r.name} (${r.state})` }));
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function currentRelease() {
  if (!state.releases) return null;
  const name = $("release").value || state.live;
  return state.releases.releases.find((r) => r.name === name) || null;
}

function fillSources() {
  const select = $("source");
  const chosen = select.value;
  const modality = state.image ? "image" : "text";
  select.replaceChildren(el("option", { value: "", text: `All ${modality} sources` }));
  const release = currentRelease();
  for (const [name, counts] of Object.entries((release && release.sources) || {})) {
    if (counts.modality === modality) select.append(el("option", { value: name, text: `${name} (${counts.rows.toLocaleString()})` }));
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

// --- search ------------------------------------------------------------------
function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.classList.remove("hidden");
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => box.classList.add("hidden"), 8000);
}

function showError(message) {
  $("error").textContent = message;
  $("error").classList.toggle("hidden", !message);
}

function params() {
  const p = new URLSearchParams({ k: $("k").value });
  if ($("source").value) p.set("source", $("source").value);
  if ($("release").value) p.set("release", $("release").value);
  return p;
}

async function runSearch(request) {
  state.last = request;
  const ticket = (state.ticket = (state.ticket || 0) + 1); // only the newest search may draw its results
  showError("");
  $("go").disabled = true;
  $("summary").textContent = "Searching…";
  try {
    let result;
    if (request.image) {
      const form = new FormData();
      form.append("file", request.image, request.image.name || "image");
      result = await api(`api/v1/search/image?${params()}`, { method: "POST", body: form });
    } else {
      const p = params();
      p.set("q", request.q);
      result = await api(`api/v1/search?${p}`);
    }
    if (ticket === state.ticket) render(result, request);
  } catch (err) {
    if (ticket !== state.ticket) return;
    $("summary").textContent = "";
    showError(err.message);
  } finally {
    if (ticket === state.ticket) $("go").disabled = false;
  }
}

// Scores under these are shown dimmed and folded: with all-MiniLM-L6-v2, passages that
// answer a question score 0.3-0.8 and unrelated ones -0.1-0.2. Image features have no such
// floor (every photo is somewhat similar), so image results are never folded.
const RELEVANCE_FLOOR = { text: 0.25, image: -Infinity };

function render(result, request) {
  $("empty").classList.add("hidden");
  const n = result.hits.length;
  // A hybrid or sparse search scores by reciprocal rank fusion (about 0.016-0.033), not cosine: no floor.
  const floor = result.mode && result.mode !== "dense" ? -Infinity : (RELEVANCE_FLOOR[result.modality] ?? -Infinity);
  const strong = result.hits.filter((h) => h.score >= floor);
  const weak = result.hits.filter((h) => h.score < floor);
  $("summary").textContent = `${n} result${n === 1 ? "" : "s"} from release ${result.release} · ${Math.round(result.took_ms)} ms ` +
    `(embed ${Math.round(result.embed_ms)} ms, search ${Math.round(result.search_ms)} ms)` +
    (weak.length ? ` · ${weak.length} below the relevance floor ${floor.toFixed(2)}, folded` : "");
  $("results").replaceChildren();
  $("grid").replaceChildren();
  if (result.modality === "image") {
    for (const hit of result.hits) $("grid").append(tile(hit));
  } else {
    for (const hit of strong) $("results").append(textHit(hit, request.q || ""));
    if (weak.length) {
      const list = el("ol", { class: "results" });
      for (const hit of weak) list.append(textHit(hit, request.q || ""));
      $("results").append(el("li", { class: "weak" },
        el("details", {}, el("summary", { text: `${weak.length} weaker result${weak.length === 1 ? "" : "s"} (score below ${floor.toFixed(2)})` }), list)));
    }
  }
  if (!n) $("summary").textContent += " — nothing matched";
  else if (!strong.length) $("summary").textContent += " — no strong match";
}

// The golden-query recall@k of a release (quality gate), or a dash without golden queries.
function recallCell(q) {
  if (!q || q.recall === null || q.recall === undefined) return el("td", { class: "num muted", text: "–" });
  const cell = el("td", { class: `num recall ${q.gate_passed === false ? "refused" : ""}`, text: q.recall.toFixed(2) });
  cell.title = `recall@${q.k} ${q.recall.toFixed(3)}, MRR ${q.mrr.toFixed(3)}; quality gate ${q.gate_passed === false ? "refused" : "passed"}`;
  return cell;
}

function scoreBar(score) {
  const pct = Math.max(0, Math.min(100, Math.round(score * 100)));
  return el("span", { class: "score" }, el("span", { class: "bar" }, el("i", { style: `width:${pct}%` })), score.toFixed(3));
}

// Words too common to be worth highlighting.
const STOP = new Set("the and for are but not you your with from this that have has had was were can could how what when where which who why does did into onto our out about than then them they their there these those its it's also any all".split(" "));

function terms(q) {
  return [...new Set(q.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((t) => t.length > 2 && !STOP.has(t)))];
}

function snippet(text, q, size = 360) {
  if (text.length <= size) return text;
  const lower = text.toLowerCase();
  const hits = terms(q).map((t) => lower.indexOf(t)).filter((i) => i >= 0);
  const at = hits.length ? Math.min(...hits) : 0;
  let start = Math.max(0, at - 80);
  let end = Math.min(text.length, start + size);
  // Cut at word boundaries, not in the middle of a word.
  if (start > 0) start = text.indexOf(" ", start) + 1 || start;
  if (end < text.length) end = text.lastIndexOf(" ", end) > start ? text.lastIndexOf(" ", end) : end;
  return (start > 0 ? "… " : "") + text.slice(start, end).trim() + (end < text.length ? " …" : "");
}

function highlighted(text, q) {
  const node = el("p", { class: "snippet" });
  const words = terms(q).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!words.length) { node.textContent = text; return node; }
  // split() with one capture group puts the matches at the odd positions.
  // Words that start with a query word ("connect" marks "connection"), never the middle of a word.
  text.split(new RegExp(`(?<![\\p{L}\\p{N}])(${words.join("|")})`, "iu")).forEach((part, i) => {
    if (part) node.append(i % 2 ? el("mark", { text: part }) : document.createTextNode(part));
  });
  return node;
}

function textHit(hit, q) {
  const where = [hit.page != null ? `p. ${hit.page}` : "", hit.heading].filter(Boolean).join(" · ");  // page: PDF hits
  return el("li", { class: "result" },
    el("div", { class: "meta" }, el("span", { class: "file", text: hit.file }), el("span", { class: "badge", text: hit.source }),
      hit.retrievers && hit.retrievers.join() !== "dense" ? el("span", { class: "badge", text: hit.retrievers.join(" + ") }) : null, scoreBar(hit.score)),
    where ? el("div", { class: "heading", text: where }) : null,
    highlighted(snippet(hit.text, q), q));
}

function tile(hit) {
  const img = el("img", { alt: hit.file, loading: "lazy" });
  const box = el("div", { class: "thumb" }, img);
  img.onerror = () => box.replaceChildren(el("div", { class: "gone", text: "image not available" }));
  if (state.token) {
    // <img> cannot send a bearer token: fetch it and show a blob.
    fetch(hit.thumbnail_url, { headers: { Authorization: `Bearer ${state.token}` } })
      .then((r) => (r.ok ? r.blob() : Promise.reject(r.status)))
      .then((b) => { img.src = URL.createObjectURL(b); })
      .catch(() => img.onerror());
  } else {
    img.src = hit.thumbnail_url;
  }
  return el("figure", { class: "tile", title: `${hit.source}/${hit.file}` }, box,
    el("figcaption", { class: "cap" }, el("span", { class: "name", text: hit.file.split("/").pop() }), el("span", { class: "sc", text: `score ${hit.score.toFixed(3)}` })));
}

// --- image input ----------------------------------------------------------------
// Returns whether the file was taken (a non-image is refused with a message).
function setImage(file) {
  if (file && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (${file.type || "unknown type"}); drop a JPEG or PNG`);
    return false;
  }
  state.image = file || null;
  $("image-chip").classList.toggle("hidden", !file);
  if (file) {
    $("image-name").textContent = file.name || "pasted image";
    $("image-preview").src = URL.createObjectURL(file);
    $("q").value = "";
    $("q").placeholder = "Searching by image — clear it to search by text";
  } else {
    $("q").placeholder = "Search the knowledge base…";
    $("file").value = "";
  }
  fillSources();
  return true;
}

function wire() {
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("q").value.trim();
    if (state.image) runSearch({ image: state.image });
    else if (q) runSearch({ q });
    else showError("Type something to search for, or drop an image.");
  });
  $("q").addEventListener("input", () => { if ($("q").value && state.image) setImage(null); });
  $("file").addEventListener("change", () => { const file = $("file").files[0]; if (file && setImage(file)) runSearch({ image: file }); });
  $("image-clear").addEventListener("click", () => setImage(null));
  $("release").addEventListener("change", () => { fillSources(); if (state.last) runSearch(state.last); });
  $("source").addEventListener("change", () => { if (state.last) runSearch(state.last); });
  $("k").addEventListener("change", () => { if (state.last) runSearch(state.last); });

  const zone = $("drop-zone");
  let depth = 0;
  zone.addEventListener("dragenter", (ev) => { ev.preventDefault(); depth++; zone.classList.add("dragging"); });
  zone.addEventListener("dragover", (ev) => ev.preventDefault());
  zone.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; zone.classList.remove("dragging"); } });
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file && setImage(file)) runSearch({ image: file });
  });
  document.addEventListener("paste", (ev) => {
    const file = [...(ev.clipboardData ? ev.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file && setImage(file)) runSearch({ image: file });
  });
}

wire();
loadReleases();
// Follow switches while the tab is visible; catch up as soon as it is shown again.
setInterval(() => { if (document.visibilityState === "visible") loadReleases(); }, 5000);
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") loadReleases(); });

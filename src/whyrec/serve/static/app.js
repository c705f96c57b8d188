// whyrec web page: talks to the /v1 API of the same server. All data goes into the page
// through textContent (never innerHTML), so titles and reasons cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
// after: the consistency token of this page's latest write (POST /v1/interactions), sent
// with every request as X-Whyrec-After, so that whichever replica answers, it shows the
// page's own writes (the page writes one at a time: the latest token covers the others).
const state = { user: null, auth: false, after: "" };
// How often the page asks again while an LLM reason is being written. A local model can
// take minutes per reason on a busy machine, so there is no cap: the page keeps asking
// (more slowly after a while) until no reason is pending, or the user stops it.
// ?poll_ms=N in the page's address sets the first interval (tests use a short one).
const POLL_MS = Math.max(50, Number(new URLSearchParams(location.search).get("poll_ms")) || 3000);
const POLL_MAX_MS = Math.max(POLL_MS, 15000);
const STILL_WRITING_MS = 20000;

// Untrusted text as the page shows it, by whyrec.safety's terminal rule
// (TERMINAL_CONTROL_CHARS): control characters other than newline and tab, line
// separators and the bidirectional controls U+202A-U+202E and U+2066-U+2069 become
// visible \xNN / \uNNNN text, so a title cannot reorder what it shows ("Harmless
// \u202egpj.exe" stays readable as written); with ``cap`` the text is cut with "…".
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const TITLE_CAP = 300;
// /health's LLM state in a reader's words ("unknown": nothing asked of it yet)
const LLM_STATES = { up: "up", unknown: "not asked yet", down: "down, retrying later",
  unavailable: "unavailable" };

// A title as the reasons name it: a catalogue's trailing article moved to the front
// ("Devil's Own, The (1997)" -> "The Devil's Own (1997)"), everything else kept. The rule
// of whyrec.explain.grounding.spoken_title; tests/serve/test_browser.py checks that both
// give the same text on tests/explain/fixtures/spoken_titles.json.
const ARTICLE_TAIL = /^(.+?),\s*(The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El|Los|Las|Un|Une)$/i;
function spoken(title) {
  const text = String(title ?? "");
  let head = text.trimEnd();
  let cut = text.length;
  while (head.endsWith(")")) { // the bracket groups at the end: "(Flor de mi…) (1995)"
    const start = head.lastIndexOf("(");
    const inner = head.slice(start + 1, -1);
    if (start < 0 || inner.includes("(") || inner.includes(")")) break;
    head = head.slice(0, start).trimEnd();
    cut = head.length;
  }
  const m = ARTICLE_TAIL.exec(text.slice(0, cut).trim());
  if (!m || !m[1].trim()) return text;
  return m[2] + (m[2].endsWith("'") ? "" : " ") + m[1].trim() + text.slice(cut);
}

function shown(value, cap = 0) {
  let s = String(value ?? "");
  if (cap && s.length > cap) s = s.slice(0, cap - 1).trimEnd() + "…";
  return s.replace(CONTROL, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? "\\x" + code.toString(16).padStart(2, "0")
      : "\\u" + code.toString(16).padStart(4, "0");
  });
}

// ``text`` and ``title`` pass through shown(); ``value`` (a form value sent back to the
// server) is kept as the data has it.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = shown(v);
    else if (k === "title") node.setAttribute(k, shown(v));
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = shown(text);
  s.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = "Bearer " + key;
  if (state.after) headers["X-Whyrec-After"] = state.after;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  const token = res.ok && res.headers.get("X-Whyrec-Token");
  if (token && /^[0-9]{1,18}$/.test(token)) state.after = token;
  if (!res.ok) {
    let msg = data.detail;
    if (Array.isArray(msg)) msg = msg.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    if (res.status === 401) {
      $("auth").hidden = false;
      msg = "this server needs an API key: enter it at the top right";
    }
    throw new Error(msg || `HTTP ${res.status}`);
  }
  return data;
}

function badge(source, pending) {
  const llm = source === "llm" || source === "baseline-llm" || source === "llm+template";
  const text = source === "llm+template" ? "LLM + template" : llm ? "LLM" : "template";
  const b = el("span", { class: "badge " + (llm ? "llm" : "template"), text });
  if (pending) b.append(el("span", { class: "pending", text: " · LLM writing…" }));
  return b;
}

function pct(x) {
  return (100 * x).toFixed(1) + "%";
}

function clock(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// Polls one section while its LLM reasons are pending, with a visible state and a
// stop/resume button (the bar: #recs-wait or #why-wait).
class Poller {
  constructor(barId) {
    this.bar = $(barId);
    this.text = this.bar.querySelector(".wait-text");
    this.button = this.bar.querySelector(".wait-stop");
    this.button.addEventListener("click", () => (this.stopped ? this.resume() : this.stop()));
    this.reset();
  }

  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.task = null;
    this.checks = 0;
    this.started = 0;
    this.stopped = false;
    this.pending = 0;
    this.show();
  }

  // after each load: ``pending`` reasons still being written, ``task`` loads again
  update(pending, task) {
    clearTimeout(this.timer);
    this.pending = pending;
    this.task = task;
    if (!pending) {
      this.started = 0;
      this.show();
      return;
    }
    if (!this.started) this.started = Date.now();
    this.show();
    if (this.stopped) return;
    const delay = Math.min(POLL_MAX_MS, POLL_MS * (1 + Math.floor(this.checks / 20)));
    this.timer = setTimeout(() => {
      this.checks += 1;
      this.show();
      this.task().catch((e) => setStatus(e.message, true));
    }, delay);
  }

  stop() {
    clearTimeout(this.timer);
    this.stopped = true;
    this.show();
  }

  resume() {
    this.stopped = false;
    this.checks = 0;
    this.started = Date.now();
    this.show();
    if (this.task) this.task().catch((e) => setStatus(e.message, true));
  }

  show() {
    const n = this.pending;
    this.bar.hidden = !n;
    this.bar.dataset.checks = String(this.checks);
    if (!n) {
      this.bar.dataset.state = "";
      return;
    }
    const what = n === 1 ? "1 reason" : `${n} reasons`;
    const waited = this.started ? Date.now() - this.started : 0;
    if (this.stopped) {
      this.bar.dataset.state = "stopped";
      this.text.textContent = `Stopped checking for ${what} the LLM is writing; the templates stay.`;
      this.button.textContent = "Check again";
      return;
    }
    const still = waited >= STILL_WRITING_MS || this.checks >= 5;
    this.bar.dataset.state = still ? "still-writing" : "writing";
    this.text.textContent = still
      ? `The LLM is still writing ${what} (${clock(waited)}, checked ${this.checks} times); ` +
        "the templates are shown until it is done."
      : `The LLM is writing ${what}…`;
    this.button.textContent = "Stop waiting";
  }
}

let recsPoller = null;
let whyPoller = null;

// ------------------------------------------------------------------ sections
function renderHistory(data) {
  const list = $("history");
  list.replaceChildren();
  $("history-count").textContent = `(${data.history_length} items)`;
  for (const it of data.items) {
    const li = el("li", {}, el("span", { class: "title", text: shown(spoken(it.title), TITLE_CAP), title: it.title }));
    if (it.text) li.append(el("span", { class: "muted small", text: " · " + it.text }));
    if (it.source === "api") li.append(el("span", { class: "badge new", text: "new" }));
    list.append(li);
  }
}

function renderPreferences(data) {
  const box = $("prefs");
  box.replaceChildren();
  $("prefs-hint").hidden = !data.model_has_preferences;
  if (!data.model_has_preferences) {
    $("prefs-source").textContent = "";
    box.append(el("p", { class: "muted", text: data.note || "no preferences for this model" }));
    return;
  }
  $("prefs-source").textContent = shown(`(${data.source}${data.pending ? ", LLM version pending" : ""})`);
  const max = Math.max(...data.preferences.map((p) => p.weight), 1e-9);
  for (const j of data.order) {
    const p = data.preferences[j];
    const bar = el("div", { class: "bar" });
    bar.style.width = (100 * p.weight / max).toFixed(1) + "%";
    box.append(
      el("div", { class: "pref", "data-index": String(j) },
        el("div", { class: "pref-text", text: `P${j + 1}. ${p.text}` }),
        el("div", { class: "bar-row" }, el("div", { class: "bar-track" }, bar),
          el("span", { class: "weight", text: pct(p.weight) })))
    );
  }
}

function reasonBlock(exp) {
  const block = el("div", { class: "reason-block" });
  block.append(el("p", { class: "reason", text: exp.reason }));
  const meta = el("div", { class: "meta" }, badge(exp.reason_source, exp.pending));
  if (exp.llm_model) meta.append(el("span", { class: "muted small", text: " " + exp.llm_model }));
  if (exp.reason_note && !exp.pending) meta.append(el("span", { class: "muted small", text: " · " + exp.reason_note }));
  block.append(meta);
  // what the reason cites: what moved this item's score (never LANE's user-level weights)
  const cited = exp.cited || { preferences: [], history: [], facts: [] };
  const parts = [];
  for (const j of cited.preferences) {
    const e = exp.preference_effects.find((p) => p.index === j);
    if (e) parts.push(`taste P${j + 1} (score −${e.score_drop.toFixed(3)} without it)`);
  }
  for (const item of cited.history) {
    const h = exp.history_effects.find((x) => x.item === item);
    if (h) parts.push(`${shown(spoken(h.title), TITLE_CAP)} (score −${h.score_drop.toFixed(3)} without it)`);
  }
  if (cited.facts.length) parts.push("shared: " + cited.facts.join(", "));
  if (parts.length) {
    block.append(el("p", { class: "muted small cited", text: "cites: " + parts.join("; ") }));
  }
  if ((exp.removed_sentences || []).length) {
    block.append(el("p", { class: "muted small",
      text: `${exp.removed_sentences.length} unsupported LLM sentence(s) removed` }));
  }
  return block;
}

function renderRecommendations(data) {
  const list = $("recs");
  list.replaceChildren();
  let pending = 0;
  for (const it of data.items) {
    const li = el("li", { class: "rec", "data-item": it.item_id },
      el("div", { class: "rec-head" },
        el("span", { class: "title", text: shown(spoken(it.title), TITLE_CAP), title: it.title }),
        el("span", { class: "muted small", text: ` score ${it.score.toFixed(3)}` }),
        addButton(it)));
    if (it.explanation) {
      li.append(reasonBlock(it.explanation));
      if (it.explanation.pending) pending += 1;
    }
    list.append(li);
  }
  if (!data.items.length) list.append(el("li", { class: "muted", text: "nothing left to recommend" }));
  renderHeatmap(data);
  return pending;
}

function renderHeatmap(data) {
  const rows = data.items.filter((it) => it.explanation && it.explanation.weights.length);
  const box = $("heatmap-box");
  const table = $("heatmap");
  table.replaceChildren();
  if (!rows.length) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const prefs = rows[0].explanation.preferences;
  const head = el("tr", {}, el("th", { text: "item" }));
  prefs.forEach((p, j) => head.append(el("th", { title: p, text: `P${j + 1}` })));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  let maxAbs = 1e-9;
  for (const r of rows) for (const e of r.explanation.preference_effects) maxAbs = Math.max(maxAbs, Math.abs(e.score_drop));
  for (const r of rows) {
    const tr = el("tr", {}, el("th", { class: "row-title", text: shown(spoken(r.title), TITLE_CAP), title: r.title }));
    const citedPrefs = (r.explanation.cited || { preferences: [] }).preferences;
    for (const e of r.explanation.preference_effects) {
      const v = e.score_drop / maxAbs;
      const isCited = citedPrefs.includes(e.index);
      const td = el("td", { title: `${e.preference}\nscore drop ${e.score_drop.toFixed(4)}, rank without it ${e.rank_without}` +
        (isCited ? "\ncited by the reason" : ""),
        text: e.score_drop.toFixed(3) + (isCited ? " ✓" : "") });
      if (isCited) td.classList.add("cited");
      td.style.background = v >= 0 ? `rgba(22, 163, 74, ${0.1 + 0.8 * v})` : `rgba(220, 38, 38, ${0.1 + 0.8 * -v})`;
      // light text only on strongly coloured cells: every label stays readable on its cell
      td.style.color = Math.abs(v) > 0.55 ? "#fff" : "#111";
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(body);
}

// "+ history": the user interacted with this item (POST /v1/interactions)
function addButton(it) {
  const b = el("button", { type: "button", class: "add-history", text: "+ history",
    title: "add this item to the user's history" });
  b.addEventListener("click", () => addToHistory(it, b));
  return b;
}

// ------------------------------------------------------------------ actions
async function addToHistory(it, button) {
  const user = state.user;
  button.disabled = true;
  try {
    // the reply's X-Whyrec-Token becomes state.after (in api()): the reload below, and
    // every later request, shows this write on whichever replica answers it
    const w = await api("/v1/interactions", { method: "POST", body: { user, item_ids: [it.item_id] } });
    if (state.user !== user) return;
    await loadUser(user);
    setStatus(`added ${it.title} to ${user}'s history (now ${w.history_length} items)`);
  } catch (e) {
    setStatus(e.message, true);
    button.disabled = false;
  }
}

async function loadRecommendations(user) {
  const k = $("k").value;
  const explain = $("explain").checked;
  const data = await api(`/v1/users/${encodeURIComponent(user)}/recommendations?k=${k}&explain=${explain}`);
  if (state.user !== user) return;
  const pending = renderRecommendations(data);
  recsPoller.update(pending, () => loadRecommendations(user));
}

async function loadUser(user) {
  state.user = user;
  recsPoller.reset();
  whyPoller.reset();
  setStatus(`loading user ${user}…`);
  try {
    const [hist, prefs] = await Promise.all([
      api(`/v1/users/${encodeURIComponent(user)}/history?limit=15`),
      api(`/v1/users/${encodeURIComponent(user)}/preferences`),
    ]);
    renderHistory(hist);
    renderPreferences(prefs);
    await loadRecommendations(user);
    setStatus(`user ${user}`);
    document.body.dataset.loaded = user;
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function explainItem(title, again = false) {
  const box = $("why");
  const user = state.user;
  if (!again) {
    whyPoller.reset();
    box.replaceChildren(el("p", { class: "muted", text: "explaining…" }));
  }
  try {
    const body = { user, item_title: title, wait_s: again ? 0 : 5 };
    const exp = await api("/v1/explanations", { method: "POST", body });
    if (state.user !== user) return;
    box.replaceChildren(
      el("h3", {}, el("span", { class: "title", text: shown(spoken(exp.title), TITLE_CAP), title: exp.title }),
        el("span", { class: "muted small", text: ` — the model ranks it #${exp.rank}` })),
      reasonBlock(exp));
    whyPoller.update(exp.pending ? 1 : 0, () => explainItem(title, true));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

let searchTimer = null;
function suggestItems() {
  clearTimeout(searchTimer);
  const q = $("why-input").value.trim();
  if (q.length < 2) return;
  searchTimer = setTimeout(async () => {
    try {
      const data = await api(`/v1/items?q=${encodeURIComponent(q)}&limit=10`);
      $("item-list").replaceChildren(...data.items.map((it) => el("option", { value: it.title })));
    } catch (e) { /* suggestions are optional */ }
  }, 200);
}

async function init() {
  recsPoller = new Poller("recs-wait");
  whyPoller = new Poller("why-wait");
  $("api-key").value = localStorage.getItem("whyrec-key") || "";
  $("auth").addEventListener("submit", (ev) => ev.preventDefault());
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("whyrec-key", $("api-key").value.trim());
    loadUsers();
  });
  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const u = $("user-input").value.trim();
    if (u) loadUser(u);
  });
  $("random").addEventListener("click", () => {
    const opts = [...$("user-list").options];
    if (!opts.length) return;
    const u = opts[Math.floor(Math.random() * opts.length)].value;
    $("user-input").value = u;
    loadUser(u);
  });
  $("why-input").addEventListener("input", suggestItems);
  $("why-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!state.user) { setStatus("pick a user first", true); return; }
    explainItem($("why-input").value.trim());
  });
  try {
    const h = await fetch("/health").then((r) => r.json());
    state.auth = h.auth;
    $("auth").hidden = !h.auth;
    const llmState = LLM_STATES[h.llm.state] || h.llm.state;
    const llm = h.llm.enabled ? `LLM ${h.llm.model || "?"} (${llmState})` : "LLM off: template reasons";
    const name = h.model.adapter ? `${h.model.name} model (${h.model.adapter})` : h.model.name;
    $("model-info").textContent = shown(`${name} · ${h.model.users} users · ${h.model.items} items · ${llm}`);
  } catch (e) {
    $("model-info").textContent = "server not reachable";
  }
  await loadUsers();
}

async function loadUsers() {
  try {
    const data = await api("/v1/users?limit=500");
    $("user-list").replaceChildren(...data.users.map((u) => el("option", { value: u.user })));
    setStatus(`${data.total} users — type or pick one`);
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus(e.message, true);
  }
}

init();

/**
 * The operator page: every live stream with its preset, prompt, fps, processing p95, drops,
 * degradations and viewers, with sparklines of the last minute; the GPU panel; switch a
 * stream's preset, change its prompt, end a publisher or a viewer.
 *
 * Polls /api/streams and /api/node once a second, one request at a time, backing off after
 * errors. The operator token comes from the form (kept for this tab in sessionStorage) or
 * `?token=`. State for tests and scripts: `window.livegenOps`.
 */

import { pageToken, requestJson } from "./whip.js";

const POLL_MS = 1000;
const HISTORY = 60; // samples kept for the sparklines (a minute at one a second)
const MAX_BACKOFF_MS = 10000;

const $ = (id) => document.getElementById(id);
let token = pageToken("livegen-ops-token");
$("token").value = token || "";

// history: sparkline samples, apart for streams and GPUs so a stream named "gpu0" shares nothing
const state = { state: "connecting", lastError: null, streams: [], node: null, polls: 0, history: { streams: {}, gpus: {} } };
window.livegenOps = state;
let presets = [];
let backoff = POLL_MS;
let timer = null;
let polling = false;
const cards = new Map(); // stream name → its card's elements

function setStatus(next, message) {
  state.state = next;
  document.body.dataset.state = next;
  $("status").textContent = message;
  $("status").classList.toggle("error", next === "error");
}

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim() || undefined;
  if (token) sessionStorage.setItem("livegen-ops-token", token);
  else sessionStorage.removeItem("livegen-ops-token");
  backoff = POLL_MS;
  loadPresets().then(pollNow); // a new token should not wait out the back-off of the old one
});

async function loadPresets() {
  try {
    presets = (await requestJson("/api/presets", { token })).presets.map((p) => p.name);
  } catch {
    presets = [];
  }
}

// ---- polling ------------------------------------------------------------------------------
/** Polls at once unless a poll is in flight (that one schedules the next). */
function pollNow() {
  if (polling) return;
  clearTimeout(timer);
  poll();
}

async function poll() {
  polling = true;
  try {
    const [streams, node] = await Promise.all([
      requestJson("/api/streams", { token }),
      requestJson("/api/node", { token }),
    ]);
    state.polls++;
    state.streams = streams.streams;
    state.node = node;
    state.lastError = null;
    backoff = POLL_MS;
    render(streams.streams, node);
    setStatus("connected", `${streams.streams.length} live stream(s) · updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    state.lastError = err.detail || err.message || String(err);
    const denied = err.status === 401 || err.status === 403;
    setStatus("error", denied ? `not allowed: ${state.lastError} — enter the operator token` : `cannot reach the node: ${state.lastError}`);
    backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
  }
  polling = false;
  timer = setTimeout(poll, backoff);
}

function remember(kind, name, key, value) {
  const history = (state.history[kind][name] ??= {});
  const series = (history[key] ??= []);
  series.push(value ?? null);
  if (series.length > HISTORY) series.shift();
  return series;
}

// ---- rendering ------------------------------------------------------------------------------
function render(streams, node) {
  $("node").textContent = `${node.device} · ${node.streams}/${node.max_streams} streams · up ${formatDuration(node.uptime_s)}`
    + (node.diffusion?.available ? ` · diffusion ${node.diffusion.path}` : "");
  $("stream-count").textContent = `(${streams.length})`;
  $("no-streams").hidden = streams.length > 0;
  const live = new Set(streams.map((s) => s.stream));
  for (const [name, card] of cards) {
    if (!live.has(name)) {
      card.root.remove();
      cards.delete(name);
      delete state.history.streams[name];
    }
  }
  for (const stream of streams) updateCard(stream);
  renderGpus(node.gpus || []);
}

/** An element; keys with a dash (aria-label) are attributes, the others properties. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.includes("-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function spark(label) {
  return el("canvas", { className: "spark", width: 400, height: 44, role: "img", "aria-label": label });
}

function figure(label) {
  const value = el("dd", { textContent: "—" });
  return [el("div", {}, el("dt", { textContent: label }), value), value];
}

function makeCard(name) {
  const [fpsBox, fps] = figure("fps in / out");
  const [p95Box, p95] = figure("processing p95");
  const [dropBox, drops] = figure("dropped");
  const [viewerBox, viewerCount] = figure("viewers");
  const [presetBox, presetName] = figure("chain");
  const [encodeBox, encode] = figure("encode p95");
  const preset = el("select", { "aria-label": `preset of ${name}` });
  const prompt = el("input", { placeholder: "new prompt", "aria-label": `prompt of ${name}` });
  const promptLabel = el("label", { textContent: "Prompt" }, prompt);
  const error = el("p", { className: "error-inline", role: "alert" });
  const degraded = el("p", { className: "degraded" });
  const end = el("button", { className: "end danger", textContent: "End stream", type: "button" });
  const viewers = el("ul", { className: "viewers" });
  const viewerSummary = el("summary", { textContent: "viewers" });
  const outputs = el("ul", { className: "outputs", "aria-label": `outputs of ${name}` });
  const outputUrl = el("input", { type: "url", required: true, placeholder: "rtmp://live.example.com/app/KEY or https://…/whip/…", "aria-label": `new output URL for ${name}` });
  const outputToken = el("input", { type: "password", placeholder: "bearer token (WHIP, optional)", autocomplete: "off", "aria-label": `token of the new output for ${name}` });
  const addOutput = el("form", { className: "row add-output" }, outputUrl, outputToken, el("button", { type: "submit", textContent: "Add output" }));
  const record = el("button", { type: "button", className: "record", textContent: "Record" });
  const recordings = el("ul", { className: "outputs recordings", "aria-label": `recordings of ${name}` });
  const holding = el("p", { className: "holding", role: "status", hidden: true });
  const fpsSpark = spark(`fps out of ${name} over the last minute`);
  const p95Spark = spark(`processing p95 of ${name} over the last minute`);
  const root = el(
    "article",
    { className: "card" },
    el("header", {}, el("h3", { textContent: name }), end),
    el("div", { className: "row" }, el("label", { textContent: "Preset" }, preset), promptLabel),
    error,
    el("dl", { className: "figures" }, fpsBox, p95Box, dropBox, viewerBox, presetBox, encodeBox),
    degraded,
    el("p", { className: "spark-label", textContent: "fps out, last minute" }),
    fpsSpark,
    el("p", { className: "spark-label", textContent: "processing p95 (ms), last minute" }),
    p95Spark,
    el("details", { className: "viewer-list" }, viewerSummary, viewers),
    el("h4", { textContent: "Outputs" }), outputs, addOutput,
    el("h4", { textContent: "Recordings" }, record), recordings,
  );
  root.querySelector("header").after(holding);
  root.dataset.stream = name;
  preset.addEventListener("change", () => control(name, { preset: preset.value }, error));
  prompt.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const effect = card.promptEffect;
    if (effect) control(name, { params: { [effect]: { prompt: prompt.value.trim() } } }, error);
  });
  addOutput.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { url: outputUrl.value.trim() };
    if (outputToken.value) body.token = outputToken.value;
    if (await post(`/api/streams/${encodeURIComponent(name)}/outputs`, body, error)) {
      outputUrl.value = "";
      outputToken.value = "";
    }
  });
  record.addEventListener("click", () => post(`/api/streams/${encodeURIComponent(name)}/recordings`, {}, error));
  end.addEventListener("click", async () => {
    if (!confirm(`End stream ${name} and all its viewers?`)) return;
    await action(`/api/streams/${encodeURIComponent(name)}`, error);
  });
  $("streams").append(root);
  const card = { root, fps, p95, drops, viewerCount, presetName, encode, preset, prompt, promptLabel, error, degraded, viewers, viewerSummary, outputs, recordings, holding, fpsSpark, p95Spark, promptEffect: null };
  cards.set(name, card);
  return card;
}

function updateCard(stream) {
  const name = stream.stream;
  const card = cards.get(name) || makeCard(name);
  card.fps.textContent = `${fixed(stream.fps_in)} / ${fixed(stream.fps_out)}`;
  card.p95.textContent = stream.latency_ms?.p95 == null ? "—" : `${fixed(stream.latency_ms.p95)} ms`;
  const dropped = Object.entries(stream.dropped || {});
  // processed but replaced in the encoder's slot before any viewer got it: the name /metrics uses
  if (stream.output?.encoder_frames_dropped) dropped.push(["encoder_slot_replaced", stream.output.encoder_frames_dropped]);
  card.drops.textContent = String(dropped.reduce((sum, [, n]) => sum + n, 0));
  card.drops.title = dropped.map(([reason, n]) => `${reason}: ${n}`).join("\n") || "no frames dropped";
  card.viewerCount.textContent = String(stream.viewers);
  card.viewerSummary.textContent = stream.viewers === 1 ? "1 viewer" : `${stream.viewers} viewers`;
  card.presetName.textContent = stream.preset;
  card.presetName.title = (stream.effects || []).map((e) => e.name).join(" → ");
  card.encode.textContent = stream.output?.encode_ms?.p95 == null ? "—" : `${fixed(stream.output.encode_ms.p95)} ms`;
  const degraded = Object.entries(stream.degraded || {});
  card.degraded.textContent = degraded.length ? `degraded: ${degraded.map(([k, n]) => `${k} ${n}`).join(", ")}` : "";

  if (document.activeElement !== card.preset) {
    const options = presets.includes(stream.preset) ? presets : [...presets, stream.preset];
    if ([...card.preset.options].map((o) => o.value).join("\n") !== options.join("\n")) {
      card.preset.replaceChildren(...options.map((p) => new Option(p, p)));
    }
    card.preset.value = stream.preset;
  }
  const withPrompt = (stream.effects || []).find((e) => e.name === "stylize" || (e.name === "background" && e.params?.mode === "generated"));
  card.promptEffect = withPrompt?.name || null;
  card.promptLabel.hidden = !withPrompt;
  if (withPrompt && document.activeElement !== card.prompt) card.prompt.value = withPrompt.params?.prompt || "";

  const ids = (stream.viewer_sessions || []).map((v) => v.id);
  if (card.viewers.dataset.ids !== ids.join(",")) {
    card.viewers.dataset.ids = ids.join(",");
    card.viewers.replaceChildren(
      ...(stream.viewer_sessions || []).map((viewer) => {
        const button = el("button", { textContent: "End", type: "button", className: "danger", "aria-label": `end viewer ${viewer.id}` });
        button.addEventListener("click", () =>
          action(`/api/streams/${encodeURIComponent(name)}/viewers/${encodeURIComponent(viewer.id)}`, card.error));
        const item = el("li", {}, el("span", {
          textContent: `viewer ${viewer.id.slice(0, 8)} · ${viewer.codec || "?"} · since ${new Date(viewer.since * 1000).toLocaleTimeString()}`,
          title: viewer.id,
        }), button);
        item.dataset.viewer = viewer.id;
        return item;
      }),
    );
  }
  card.holding.hidden = stream.state !== "holding";
  card.holding.textContent = stream.state === "holding" ? `publisher away since ${new Date(stream.holding_since * 1000).toLocaleTimeString()}: showing the slate` : "";
  renderOutputs(card.outputs, name, "outputs", stream.outputs || [], card.error);
  renderOutputs(card.recordings, name, "recordings", stream.recordings || [], card.error);
  sparkline(card.fpsSpark, remember("streams", name, "fps", stream.fps_out), "#3ecf8e");
  sparkline(card.p95Spark, remember("streams", name, "p95", stream.latency_ms?.p95), "#4f8cff");
}

/** One line per output or recording: name, state, bitrate, reconnects, last error; a Stop button. */
function renderOutputs(list, stream, kind, items, error) {
  list.replaceChildren(
    ...items.map((out) => {
      const stop = el("button", { type: "button", className: "danger", textContent: "Stop", "aria-label": `stop ${out.name}` });
      stop.addEventListener("click", () =>
        action(`/api/streams/${encodeURIComponent(stream)}/${kind}/${encodeURIComponent(out.id)}`, error));
      const rate = out.bitrate_bps ? ` · ${(out.bitrate_bps / 1e6).toFixed(2)} Mbit/s` : "";
      const again = out.reconnects ? ` · ${out.reconnects} reconnects` : "";
      const item = el("li", {},
        el("span", { className: `state state-${out.state}`, textContent: out.state }),
        el("span", { textContent: `${out.name} · ${out.url}${rate}${again}`, title: out.last_error || "" }),
        stop);
      if (out.last_error) item.append(el("small", { className: "error-inline", textContent: out.last_error }));
      item.dataset.output = out.id;
      return item;
    }),
  );
}

function renderGpus(gpus) {
  const box = $("gpus");
  if (!gpus.length) {
    box.replaceChildren(el("p", { className: "help", textContent: "no NVIDIA GPU on this node" }));
    return;
  }
  box.replaceChildren(
    ...gpus.map((gpu) => {
      const util = remember("gpus", gpu.index, "util", gpu.utilization == null ? null : gpu.utilization * 100);
      const mem = remember("gpus", gpu.index, "mem", gpu.memory_used_bytes == null ? null : gpu.memory_used_bytes / 2 ** 30);
      const [a, ua] = figure("utilisation");
      const [b, ub] = figure("memory");
      const [c, uc] = figure("temperature");
      const [d, ud] = figure("power");
      const [e, ue] = figure("encoder");
      ua.textContent = gpu.utilization == null ? "—" : `${Math.round(gpu.utilization * 100)} %`;
      ub.textContent = gpu.memory_used_bytes == null ? "—" : `${(gpu.memory_used_bytes / 2 ** 30).toFixed(1)} / ${(gpu.memory_total_bytes / 2 ** 30).toFixed(0)} GiB`;
      uc.textContent = gpu.temperature_celsius == null ? "—" : `${gpu.temperature_celsius} °C`;
      ud.textContent = gpu.power_watts == null ? "—" : `${Math.round(gpu.power_watts)} W`;
      ue.textContent = gpu.encoder_utilization == null ? "—" : `${Math.round(gpu.encoder_utilization * 100)} %`;
      const utilSpark = spark(`utilisation of GPU ${gpu.index} over the last minute`);
      const memSpark = spark(`memory used on GPU ${gpu.index} over the last minute`);
      sparkline(utilSpark, util, "#f0b429", 100);
      sparkline(memSpark, mem, "#4f8cff");
      return el("article", { className: "card" }, el("header", {}, el("h3", { textContent: `${gpu.index}: ${gpu.name}` })),
        el("dl", { className: "figures" }, a, b, c, d, e),
        el("p", { className: "spark-label", textContent: "utilisation %, last minute" }), utilSpark,
        el("p", { className: "spark-label", textContent: "memory GiB, last minute" }), memSpark);
    }),
  );
}

/** A line over the last minute; the scale runs from 0 to the largest value (or `top`). */
function sparkline(canvas, values, colour, top) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const known = values.filter((v) => v != null);
  if (!known.length) return;
  const max = top ?? Math.max(...known, 1e-9);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  const offset = HISTORY - values.length; // the newest sample sits at the right edge
  values.forEach((v, i) => {
    if (v == null) return;
    const x = ((i + offset) / (HISTORY - 1)) * (width - 2) + 1;
    const y = height - 2 - (v / max) * (height - 6);
    if (started) ctx.lineTo(x, y);
    else ctx.moveTo(x, y);
    started = true;
  });
  ctx.stroke();
  canvas.dataset.points = String(known.length);
}

// ---- actions --------------------------------------------------------------------------------
async function control(name, body, error) {
  error.textContent = "";
  try {
    await requestJson(`/api/streams/${encodeURIComponent(name)}`, { method: "PATCH", body, token });
    pollNow();
  } catch (err) {
    error.textContent = err.detail || err.message || String(err);
  }
}

async function post(path, body, error) {
  error.textContent = "";
  try {
    await requestJson(path, { method: "POST", body, token });
    pollNow();
    return true;
  } catch (err) {
    error.textContent = err.detail || err.message || String(err);
    return false;
  }
}

async function action(path, error) {
  error.textContent = "";
  try {
    await requestJson(path, { method: "DELETE", token });
    pollNow(); // the ended stream or viewer leaves the page now, not a second later
  } catch (err) {
    error.textContent = err.detail || err.message || String(err);
  }
}

function fixed(value) {
  return value == null ? "—" : Number(value).toFixed(1);
}

function formatDuration(seconds) {
  const s = Math.floor(seconds || 0);
  return s < 3600 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

await loadPresets();
poll();

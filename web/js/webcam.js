/**
 * The webcam page: publish the camera over WHIP, play the processed stream back over WHEP next to
 * the local preview, switch the effect preset live, change the background and overlays live (see
 * look.js), and show fps, node stats and the measured camera→node→page delay (read from the stamp
 * drawn into every published frame).
 *
 * Query parameters: `stream` (name, default "cam"), `preset`, `autostart=1`; `#token=…` (bearer
 * token when the node requires one; see pageToken). State for tests and scripts lives on
 * `window.livegen`.
 */

import { openCamera, StampedCamera } from "./camera.js";
import { FrameMeter, median } from "./meter.js";
import { LookPanel } from "./look.js";
import { elapsedMs, StampReader } from "./stamp.js";
import { pageToken, publish, requestJson, sessionEnded, watchWhenPublished } from "./whip.js";

const STREAM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const DELAY_WINDOW_MS = 1000;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("controls"),
  stream: $("stream"),
  preset: $("preset"),
  presetHelp: $("preset-help"),
  measure: $("measure"),
  start: $("start"),
  stop: $("stop"),
  status: $("status"),
  local: $("local"),
  processed: $("processed"),
  watchLink: $("watch-link"),
  stats: {
    fps: $("stat-fps"),
    size: $("stat-size"),
    delay: $("stat-delay"),
    nodeFps: $("stat-node-fps"),
    latency: $("stat-latency"),
    drops: $("stat-drops"),
  },
};

const params = new URLSearchParams(location.search);
const token = pageToken("livegen-webcam-token");

/** What tests and scripts can read. */
const state = {
  state: "idle", // idle | starting | publishing | stopping | error
  lastError: null,
  stream: null,
  preset: null,
  effects: null, // the node's chain after the last change from this page
  width: null,
  height: null,
  audio: false,
  delayMs: null,
  processedFps: null,
  framesDecoded: 0,
  node: null,
};
window.livegen = state;

let presets = { default: null, presets: [] };
const look = new LookPanel(
  {
    form: $("look"),
    mode: $("bg-mode"),
    blur: $("bg-blur"),
    file: $("bg-file"),
    color: $("bg-color"),
    prompt: $("bg-prompt"),
    title: $("ov-title"),
    subtitle: $("ov-subtitle"),
    clock: $("ov-clock"),
    help: $("look-help"),
  },
  {
    token,
    onError: (message) => showError(message, { fatal: false }),
    onApplied: (info) => {
      state.preset = info.preset;
      state.effects = info.effects;
      state.node = info;
    },
  },
);
let live = null; // the running publish: sessions, camera, meters, timers

// ---- status -------------------------------------------------------------------------------
function setState(next, message) {
  state.state = next;
  document.body.dataset.state = next;
  ui.status.textContent = message;
  ui.status.classList.toggle("error", next === "error");
  const busy = next === "starting" || next === "publishing" || next === "stopping";
  ui.start.disabled = busy;
  ui.stop.disabled = !busy || next === "stopping";
  ui.stream.disabled = busy;
}

function showError(message, { fatal = true } = {}) {
  state.lastError = message;
  if (fatal) setState("error", message);
  else ui.status.textContent = `${message} (still publishing)`;
}

function errorText(err) {
  return err?.detail || err?.message || String(err);
}

// ---- presets ------------------------------------------------------------------------------
async function loadPresets() {
  try {
    presets = await requestJson("/api/presets", { token });
  } catch (err) {
    showError(`cannot load the presets: ${errorText(err)}`);
    return;
  }
  const wanted = params.get("preset") || presets.default;
  ui.preset.replaceChildren(
    ...presets.presets.map(({ name, description }) => {
      const option = new Option(name, name, false, name === wanted);
      option.title = description || "";
      return option;
    }),
  );
  describePreset();
}

function describePreset() {
  const found = presets.presets.find((p) => p.name === ui.preset.value);
  ui.presetHelp.textContent = found?.description || "";
  look.load(found?.effects || []);
}

async function changePreset() {
  describePreset();
  if (!live?.publisher) return; // before Start the choice goes into the WHIP request
  const wanted = ui.preset.value;
  try {
    const info = await requestJson(`/api/streams/${encodeURIComponent(live.stream)}`, {
      method: "PATCH",
      body: { preset: wanted },
      token,
    });
    state.preset = info.preset;
    state.effects = info.effects;
    state.node = info;
  } catch (err) {
    ui.preset.value = state.preset; // the node kept the old one
    describePreset();
    showError(`cannot switch to ${wanted}: ${errorText(err)}`, { fatal: false });
  }
}

// ---- start / stop -------------------------------------------------------------------------
function checkAborted(run) {
  if (run.abort.signal.aborted) throw new DOMException("stopped", "AbortError");
}

async function start() {
  if (live) return;
  const stream = ui.stream.value.trim();
  if (!STREAM_NAME.test(stream)) {
    showError("a stream name is 1 to 64 letters, digits, '-' or '_'");
    return;
  }
  const run = (live = { stream, abort: new AbortController(), delays: [], reader: new StampReader() });
  Object.assign(state, { stream, lastError: null, delayMs: null, processedFps: null, framesDecoded: 0, node: null });
  try {
    setState("starting", "opening the camera…");
    run.camera = await openCamera();
    checkAborted(run);
    const [cameraTrack] = run.camera.getVideoTracks();
    const audioTracks = run.camera.getAudioTracks();
    state.audio = audioTracks.length > 0;
    ui.local.srcObject = run.camera;
    await playWhenReady(ui.local);
    checkAborted(run);

    run.compositor = new StampedCamera(ui.local, cameraTrack);
    state.width = run.compositor.width;
    state.height = run.compositor.height;
    run.compositor.stamping = ui.measure.checked;
    setState("starting", `publishing ${stream}…`);
    run.publisher = await publish({
      stream,
      tracks: [run.compositor.track(), ...audioTracks],
      preset: ui.preset.value,
      token,
      signal: run.abort.signal,
    });
    checkAborted(run);
    state.preset = ui.preset.value;
    look.attach(stream); // look changes made before Start go out now
    run.sender = run.publisher.pc.getSenders().find((s) => s.track?.kind === "video");

    setState("starting", "connecting to the processed stream…");
    run.viewer = await watchWhenPublished({ stream, token, audio: false, signal: run.abort.signal });
    checkAborted(run);
    ui.processed.srcObject = run.viewer.stream;
    ui.processed.play().catch(() => {}); // muted: autoplay is allowed
    run.meter = new FrameMeter(ui.processed, () => readStamp(run));
    run.statsTimer = setInterval(() => updateStats(run), 1000);
    run.onVisibility = () => syncTrack(run);
    document.addEventListener("visibilitychange", run.onVisibility);
    watchSessions(run);
    const watchUrl = new URL(`/watch/${encodeURIComponent(stream)}`, location.href);
    ui.watchLink.href = watchUrl.href;
    ui.watchLink.textContent = watchUrl.pathname;
    ui.watchLink.hidden = false;
    setState("publishing", `publishing ${stream}${state.audio ? " (video and audio)" : " (video only)"}`);
  } catch (err) {
    if (err.name === "AbortError" || run !== live) {
      await release(run);
      return;
    }
    live = null;
    await release(run);
    showError(errorText(err));
  }
}

async function stop() {
  if (!live) return;
  const run = live;
  live = null;
  setState("stopping", "stopping…");
  await release(run);
  setState("idle", `stopped publishing ${run.stream}`);
}

/** End everything `run` holds; safe to call more than once and on a half-started run. */
async function release(run) {
  run.abort.abort();
  look.attach(null);
  clearInterval(run.statsTimer);
  run.meter?.stop();
  run.compositor?.stop();
  if (run.onVisibility) document.removeEventListener("visibilitychange", run.onVisibility);
  await Promise.allSettled([run.viewer?.close(), run.publisher?.close()]);
  for (const track of run.camera?.getTracks() ?? []) track.stop();
  for (const video of [ui.local, ui.processed]) video.srcObject = null;
  ui.watchLink.hidden = true;
  Object.assign(state, { delayMs: null, processedFps: null });
}

function playWhenReady(video) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the camera sent no picture within 10 s")), 10000);
    const ready = () => {
      clearTimeout(timer);
      video.play().then(resolve, resolve); // muted preview: play() only fails if interrupted
    };
    if (video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA && video.videoWidth) ready();
    else video.addEventListener("loadeddata", ready, { once: true });
  });
}

/** Fail the run when the node ends either session or the connection is lost. */
function watchSessions(run) {
  for (const [session, what] of [
    [run.publisher, "publishing"],
    [run.viewer, "the processed stream"],
  ]) {
    sessionEnded(session).then(async (reason) => {
      if (live !== run || reason === "closed") return;
      live = null;
      await release(run);
      showError(`${what} stopped: ${reason}`);
    });
  }
}

/** Publish the stamped canvas or the raw camera, whichever `compositor.track()` says now. */
function syncTrack(run) {
  const wanted = run.compositor?.track();
  if (run.sender && wanted && run.sender.track !== wanted) {
    run.sender.replaceTrack(wanted).catch((err) => showError(`cannot switch tracks: ${errorText(err)}`, { fatal: false }));
  }
}

// ---- measurements -------------------------------------------------------------------------
function readStamp(run) {
  if (!run.compositor?.stamped) return;
  const video = ui.processed;
  const value = run.reader.read(video, video.videoWidth, video.videoHeight);
  if (value === null) return;
  const now = performance.now();
  run.delays.push({ at: now, delay: elapsedMs(value, now) });
}

async function updateStats(run) {
  const now = performance.now();
  run.delays = run.delays.filter((d) => d.at > now - DELAY_WINDOW_MS);
  state.delayMs = run.delays.length ? Math.round(median(run.delays.map((d) => d.delay))) : null;
  state.processedFps = run.meter.fps;
  const inbound = await run.viewer.videoStats().catch(() => null);
  if (inbound) state.framesDecoded = inbound.framesDecoded ?? state.framesDecoded;

  const { stats } = ui;
  stats.fps.textContent = String(state.processedFps);
  stats.size.textContent = ui.processed.videoWidth ? `${ui.processed.videoWidth}×${ui.processed.videoHeight}` : "—";
  stats.delay.textContent = state.delayMs === null ? "—" : `${state.delayMs} ms`;
  stats.delay.title = run.compositor.stamped
    ? "camera → node → this page, read from the stamp in the top-left corner; — when the effect destroys the stamp"
    : "turn on “measure delay” to measure";

  let info;
  try {
    info = await requestJson(`/api/streams/${encodeURIComponent(run.stream)}`, { token });
  } catch {
    return; // the next tick tries again; a lost stream is reported by watchSessions
  }
  if (live !== run) return;
  state.node = info;
  const dropped = Object.entries(info.dropped || {});
  stats.nodeFps.textContent = info.fps_out?.toFixed(1) ?? "—";
  stats.latency.textContent = info.latency_ms?.p95 == null ? "—" : `${info.latency_ms.p95.toFixed(1)} ms`;
  stats.drops.textContent = String(dropped.reduce((sum, [, n]) => sum + n, 0));
  stats.drops.title = dropped.map(([reason, n]) => `${reason}: ${n}`).join("\n") || "no frames dropped";
}

// ---- wiring -------------------------------------------------------------------------------
ui.stream.value = params.get("stream") || "cam";
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  start();
});
ui.stop.addEventListener("click", stop);
ui.preset.addEventListener("change", changePreset);
ui.measure.addEventListener("change", () => {
  if (!live?.compositor) return;
  live.compositor.stamping = ui.measure.checked;
  live.delays = [];
  syncTrack(live);
});
// Leaving the page ends the sessions (their DELETEs are sent with keepalive).
window.addEventListener("pagehide", () => live && release(live));

setState("idle", "press Start to publish your camera");
await loadPresets();
if (params.get("autostart") === "1" && state.state !== "error") start();

/**
 * The webcam page: publish the camera over WHIP, play the processed stream back over WHEP next to
 * the local preview, switch the effect preset live, change the background and overlays live (see
 * look.js), and show fps, node stats and the measured camera→node→page delay (read from the stamp
 * drawn into every published frame). When the node ends a session or its connection fails or stays
 * lost, the page publishes or watches again by itself, with backoff (see `reconnect`).
 *
 * Query parameters: `stream` (name, default "cam"), `preset`, `autostart=1`; `#token=…` (bearer
 * token when the node requires one; see pageToken). State for tests and scripts lives on
 * `window.livegen`.
 */

import { openCamera, StampedCamera } from "./camera.js";
import { FrameMeter, median } from "./meter.js";
import { LookPanel } from "./look.js";
import { elapsedMs, StampReader } from "./stamp.js";
import {
  pageToken,
  publish,
  requestJson,
  retryable,
  retryDelayMs,
  sessionEnded,
  sleep,
  watch,
} from "./whip.js";

const STREAM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const DELAY_WINDOW_MS = 1000;
const STABLE_MS = 10000; // a connection that held this long starts the backoff over
const REQUEST_TIMEOUT_MS = 15000;

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
  state: "idle", // idle | starting | publishing | reconnecting | stopping | error
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
  reconnects: 0, // how often the page came back by itself after a drop
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
  const busy = ["starting", "publishing", "reconnecting", "stopping"].includes(next);
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
  const run = (live = { stream, abort: new AbortController(), delays: [], reader: new StampReader(), attempt: 0 });
  Object.assign(state, {
    stream,
    lastError: null,
    effects: null,
    delayMs: null,
    processedFps: null,
    framesDecoded: 0,
    node: null,
    reconnects: 0,
  });
  try {
    setState("starting", "opening the camera…");
    run.camera = await openCamera();
    checkAborted(run);
    const [cameraTrack] = run.camera.getVideoTracks();
    state.audio = run.camera.getAudioTracks().length > 0;
    ui.local.srcObject = run.camera;
    await playWhenReady(ui.local);
    checkAborted(run);

    run.compositor = new StampedCamera(ui.local, cameraTrack);
    state.width = run.compositor.width;
    state.height = run.compositor.height;
    run.compositor.stamping = ui.measure.checked;
    run.connecting = true; // a session lost while starting is taken up below
    await connect(run, (message) => setState("starting", message));
    run.connecting = false;
    run.meter = new FrameMeter(ui.processed, () => readStamp(run));
    run.statsTimer = setInterval(() => updateStats(run), 1000);
    run.onVisibility = () => syncTrack(run);
    document.addEventListener("visibilitychange", run.onVisibility);
    const watchUrl = new URL(`/watch/${encodeURIComponent(stream)}`, location.href);
    ui.watchLink.href = watchUrl.href;
    ui.watchLink.textContent = watchUrl.pathname;
    ui.watchLink.hidden = false;
    setState("publishing", publishingText(run));
    if (!run.publisher || !run.viewer) reconnect(run);
  } catch (err) {
    if (run.abort.signal.aborted || run !== live) {
      await release(run);
      return;
    }
    live = null;
    await release(run);
    showError(errorText(err));
  }
}

function publishingText(run) {
  return `publishing ${run.stream}${state.audio ? " (video and audio)" : " (video only)"}`;
}

/**
 * Publish the camera and play the processed stream back, whichever of the two `run` lacks (at
 * the start, or after a drop). The camera stays open throughout: no new permission prompt.
 */
async function connect(run, say) {
  const { stream } = run;
  // A request into a dead network can hang for minutes: give each one a time limit.
  const signal = () => AbortSignal.any([run.abort.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]);
  if (!run.publisher) {
    say(`publishing ${stream}…`);
    run.publisher = await publish({
      stream,
      tracks: [run.compositor.track(), ...run.camera.getAudioTracks()],
      preset: ui.preset.value,
      token,
      signal: signal(),
    });
    checkAborted(run);
    run.lostPublisher = null; // the node replaced it with this one
    state.preset = ui.preset.value;
    run.sender = run.publisher.pc.getSenders().find((s) => s.track?.kind === "video");
    watchSession(run, "publisher");
    look.attach(stream); // look changes made before Start (or while reconnecting) go out now
    if (state.effects) look.apply(); // a stream the node made anew starts from the preset
  }
  if (!run.viewer) {
    say("connecting to the processed stream…");
    run.viewer = await watch({ stream, token, audio: false, signal: signal() });
    checkAborted(run);
    watchSession(run, "viewer");
    ui.processed.srcObject = run.viewer.stream;
    ui.processed.play().catch(() => {}); // muted: autoplay is allowed
  }
  run.connectedAt = performance.now();
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
  await Promise.allSettled([run.viewer?.close(), run.publisher?.close(), run.lostPublisher?.close()]);
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

// ---- reconnecting -------------------------------------------------------------------------
/** When the node ends `run[role]` or its connection fails or stays lost, drop it and reconnect. */
function watchSession(run, role) {
  const session = run[role];
  sessionEnded(session).then((reason) => {
    if (live !== run || run[role] !== session || reason === "closed") return;
    drop(run, role);
    run.lostBecause = reason;
    reconnect(run);
  });
}

/** Let go of `run[role]`, whose media has ended. */
function drop(run, role) {
  const session = run[role];
  run[role] = null;
  if (role === "publisher") {
    // Keep the node's resource: a new publish replaces a silent publisher and keeps its stream
    // (viewers, outputs, recordings), where a DELETE would end the stream. Stop DELETEs it.
    session.pc.close();
    run.lostPublisher = session;
    run.sender = null;
    look.attach(null); // look changes wait for the new publisher
  } else {
    session.close();
    ui.processed.srcObject = null;
    state.framesDecoded = 0;
  }
}

/** A network that went silent silences both connections, a moment apart: when one is lost,
 * the other, if it is not connected either, is brought back in the same reconnect. */
function dropUnconnected(run) {
  for (const role of ["publisher", "viewer"]) {
    const pc = run[role]?.pc;
    if (pc && ["disconnected", "failed"].includes(pc.connectionState)) drop(run, role);
  }
}

/**
 * Bring back what was lost, retrying with exponential backoff and full jitter (reset once a
 * connection has held for STABLE_MS), and say so on the page. Stop gives up at once; an answer
 * that would be the same next time (a bad token or stream name, a stream taken by another
 * publisher) gives up with the node's reason.
 */
async function reconnect(run) {
  if (run.connecting) return; // the running start or loop sees what was lost too
  run.connecting = true;
  if (performance.now() - run.connectedAt >= STABLE_MS) run.attempt = 0;
  let reason = run.lostBecause;
  let retryAfterMs = null; // the node's Retry-After, when it gave one
  try {
    while (!run.publisher || !run.viewer) {
      const attempt = ++run.attempt;
      await countDown(run, retryAfterMs ?? retryDelayMs(attempt - 1), attempt, reason);
      dropUnconnected(run);
      try {
        await connect(run, () => setState("reconnecting", `Connection lost — reconnecting (attempt ${attempt})…`));
      } catch (err) {
        if (run.abort.signal.aborted || !retryable(err)) throw err;
        reason = errorText(err);
        retryAfterMs = err.retryAfterS ? err.retryAfterS * 1000 : null;
      }
    }
    state.reconnects += 1;
    setState("publishing", `Reconnected — ${publishingText(run)}`);
  } catch (err) {
    if (run.abort.signal.aborted || live !== run) {
      await release(run); // stopped meanwhile: end what the last attempt may have opened
      return;
    }
    live = null;
    await release(run);
    showError(`cannot reconnect: ${errorText(err)}`);
  } finally {
    run.connecting = false;
  }
}

/** Wait `ms` (Stop ends the wait), showing the seconds left. */
async function countDown(run, ms, attempt, reason) {
  const until = performance.now() + ms;
  for (;;) {
    const left = until - performance.now();
    if (left <= 0) return;
    const seconds = Math.ceil(left / 1000);
    setState("reconnecting", `Connection lost — reconnecting in ${seconds} s (attempt ${attempt})… (${reason})`);
    await sleep(Math.min(left, 1000), run.abort.signal);
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
  const inbound = await run.viewer?.videoStats().catch(() => null);
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
    return; // the next tick tries again; a lost stream is noticed by watchSession
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

/**
 * The viewer page at /watch/{stream}: plays the node's processed stream over WHEP.
 *
 * While nobody publishes the stream it waits, asking again after the node's Retry-After; when the
 * publisher leaves it goes back to waiting. Playback starts muted (autoplay rules) with an
 * unmute button. `#token=…` in the address: bearer token when the node requires one (see
 * pageToken). State for tests and scripts lives on `window.livegen`.
 */

import { FrameMeter } from "./meter.js";
import { pageToken, sessionEnded, SignallingError, sleep, watchWhenPublished } from "./whip.js";

const $ = (id) => document.getElementById(id);
const ui = {
  title: $("stream-name"),
  video: $("video"),
  unmute: $("unmute"),
  status: $("status"),
  stats: { fps: $("stat-fps"), size: $("stat-size"), frames: $("stat-frames") },
};

const token = pageToken("livegen-watch-token");
const streamName = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

const state = {
  state: "connecting", // connecting | waiting | connected | playing | error
  lastError: null,
  stream: streamName,
  fps: null,
  framesDecoded: 0,
  width: null,
  height: null,
  audio: false,
  muted: true,
};
window.livegen = state;
let current = null; // the session playing now

function setState(next, message) {
  state.state = next;
  document.body.dataset.state = next;
  ui.status.textContent = message;
  ui.status.classList.toggle("error", next === "error");
}

function isFatal(err) {
  // Bad name, no such route, auth: asking again will not help. Network and 5xx errors may pass.
  return err instanceof SignallingError && err.status >= 400 && err.status < 500 && err.status !== 409;
}

async function play(session) {
  const meter = new FrameMeter(ui.video, () => {
    if (state.state === "connected") setState("playing", `playing ${streamName}`);
  });
  const timer = setInterval(async () => {
    state.fps = meter.fps;
    const inbound = await session.videoStats().catch(() => null);
    if (inbound) state.framesDecoded = inbound.framesDecoded ?? state.framesDecoded;
    state.width = ui.video.videoWidth || null;
    state.height = ui.video.videoHeight || null;
    ui.stats.fps.textContent = String(state.fps);
    ui.stats.size.textContent = state.width ? `${state.width}×${state.height}` : "—";
    ui.stats.frames.textContent = String(state.framesDecoded);
  }, 1000);
  state.audio = session.stream.getAudioTracks().length > 0;
  ui.unmute.hidden = !state.audio;
  ui.video.srcObject = session.stream;
  ui.video.play().catch(() => {}); // muted, so autoplay is allowed; a failure shows no frames
  setState("connected", `connected to ${streamName}, waiting for the first frame…`);
  const reason = await sessionEnded(session);
  clearInterval(timer);
  meter.stop();
  await session.close();
  ui.video.srcObject = null;
  ui.unmute.hidden = true;
  Object.assign(state, { fps: null, width: null, height: null });
  return reason;
}

async function run() {
  ui.title.textContent = streamName;
  document.title = `${streamName} · livegen`;
  for (;;) {
    setState("connecting", `connecting to ${streamName}…`);
    let session;
    try {
      session = await watchWhenPublished({ stream: streamName, token, audio: true }, (seconds) =>
        setState("waiting", `waiting for publisher… (asking again in ${seconds} s)`),
      );
    } catch (err) {
      state.lastError = err.detail || err.message;
      if (isFatal(err)) {
        setState("error", state.lastError);
        return;
      }
      setState("waiting", `${state.lastError}; trying again in 3 s`);
      await sleep(3000);
      continue;
    }
    current = session;
    const reason = await play(session);
    current = null;
    setState("waiting", `the stream stopped (${reason}); waiting for publisher…`);
    await sleep(1000);
  }
}

ui.unmute.addEventListener("click", () => {
  ui.video.muted = !ui.video.muted;
  state.muted = ui.video.muted;
  ui.unmute.textContent = ui.video.muted ? "Unmute" : "Mute";
  if (!ui.video.muted) ui.video.play().catch(() => {});
});

// Leaving the page ends the session (its DELETE is sent with keepalive).
window.addEventListener("pagehide", () => current?.close());

run();

/**
 * WHIP (publish, RFC 9725) and WHEP (watch) clients for the node, shared by every page.
 *
 * No trickle ICE: the offer is sent once ICE gathering is complete (or after a 2 s cap), and the
 * node's answer carries all of its candidates. A session is ended with `close()`, which DELETEs
 * its resource and closes the peer. Failed requests throw `SignallingError` carrying the HTTP
 * status, the problem document's `detail` and, where the node sent one, `Retry-After` seconds.
 * `retryable` and `retryDelayMs` are the policy of a page that comes back by itself after a drop.
 */

const GATHER_CAP_MS = 2000;

export class SignallingError extends Error {
  constructor(status, detail, retryAfterS = null) {
    super(detail);
    this.name = "SignallingError";
    this.status = status;
    this.detail = detail;
    this.retryAfterS = retryAfterS;
  }
}

export function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), clamped to 1..60. */
function retryAfterSeconds(response) {
  const header = response.headers.get("Retry-After");
  if (!header) return null;
  let seconds = Number(header);
  if (!Number.isFinite(seconds)) seconds = (Date.parse(header) - Date.now()) / 1000;
  return Number.isFinite(seconds) ? Math.min(60, Math.max(1, seconds)) : null;
}

/** The `detail` of a problem+json answer, else its text, else the status line. */
export async function problemDetail(response) {
  const text = await response.text().catch(() => "");
  try {
    const problem = JSON.parse(text);
    if (problem && (problem.detail || problem.title)) return String(problem.detail || problem.title);
  } catch {
    // not JSON: fall through to the text
  }
  return text.trim().slice(0, 300) || `HTTP ${response.status} ${response.statusText}`.trim();
}

/** A JSON request to the node's API; throws `SignallingError` with the problem's detail. */
export async function requestJson(path, { method = "GET", body, token, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      headers: { ...authHeaders(token), ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new SignallingError(0, `cannot reach the node (${err.message})`);
  }
  if (!response.ok) throw new SignallingError(response.status, await problemDetail(response), retryAfterSeconds(response));
  return response.json();
}

/** Resolves once ICE gathering is complete, or after `capMs` with what was gathered so far. */
export function iceGatheringDone(pc, capMs = GATHER_CAP_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && finish();
    const timer = setTimeout(finish, capMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function abortError() {
  return new DOMException("the request was aborted", "AbortError");
}

/** Sleep `ms`, rejecting with an AbortError as soon as `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError());
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(abortError());
      },
      { once: true },
    );
  });
}

/**
 * How long to wait before retry number `attempt` (0 first): exponential backoff with full jitter,
 * a random time in [0, min(capMs, baseMs·2^attempt)], so that many pages cut off at once do not
 * all come back at the same moment.
 */
export function retryDelayMs(attempt, { baseMs = 1000, capMs = 30000, random = Math.random } = {}) {
  return random() * Math.min(capMs, baseMs * 2 ** attempt);
}

/**
 * Whether a failed publish or watch is worth trying again: the node could not be reached or did
 * not answer in time, is busy or failing, asked to retry later (Retry-After), or the peer itself
 * failed. Any other answer (401, 403, 404, a 409 stream taken, 422 …) would be the same next time.
 */
export function retryable(err) {
  if (!(err instanceof SignallingError)) return true;
  return err.status === 0 || err.status === 408 || err.status === 429 || err.status >= 500 || err.retryAfterS !== null;
}

function deleteResource(location, token) {
  // keepalive lets the DELETE outlive a page that is being closed.
  return fetch(location, { method: "DELETE", headers: authHeaders(token), keepalive: true })
    .then((response) => response.status)
    .catch(() => null);
}

/** One WHIP or WHEP session: its peer, its resource URL and, for WHEP, the received media. */
export class Session {
  constructor(pc, location, token) {
    this.pc = pc;
    this.location = location;
    this.token = token;
    this.stream = new MediaStream();
    this.closed = false;
  }

  /** DELETE the session's resource and close the peer; resolves to the DELETE's status. */
  async close() {
    if (this.closed) return null;
    this.closed = true;
    const deleted = deleteResource(this.location, this.token);
    this.pc.close();
    return deleted;
  }

  /** The first `inbound-rtp` (or `outbound-rtp`) video report of the peer's stats, or null. */
  async videoStats(type = "inbound-rtp") {
    if (this.closed) return null;
    const report = await this.pc.getStats();
    for (const entry of report.values()) if (entry.type === type && entry.kind === "video") return entry;
    return null;
  }
}

async function negotiate(pc, url, token, signal) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  if (signal?.aborted) throw abortError();
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", ...authHeaders(token) },
      body: pc.localDescription.sdp,
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new SignallingError(0, `cannot reach the node (${err.message})`);
  }
  if (response.status !== 201) {
    throw new SignallingError(response.status, await problemDetail(response), retryAfterSeconds(response));
  }
  const answer = await response.text();
  const header = response.headers.get("Location");
  if (!header) throw new SignallingError(response.status, "the node answered without a Location header");
  // against the URL that answered: a cluster node may have redirected the POST (307)
  const location = new URL(header, response.url || url).href;
  const session = new Session(pc, location, token);
  try {
    if (signal?.aborted) throw abortError();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  } catch (err) {
    await session.close(); // the node already holds a session for us: end it
    throw err;
  }
  return session;
}

function endpoint(kind, stream, base, query = {}) {
  const url = new URL(`/${kind}/${encodeURIComponent(stream)}`, base);
  for (const [key, value] of Object.entries(query)) if (value) url.searchParams.set(key, value);
  return url.href;
}

/**
 * Publish `tracks` (one video, optionally one audio) as `stream` with the effect `preset`
 * (the node's default when empty). Resolves to a Session.
 */
export async function publish({ stream, tracks, preset, token, signal, base = location.origin }) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  try {
    for (const track of tracks) pc.addTransceiver(track, { direction: "sendonly" });
    return await negotiate(pc, endpoint("whip", stream, base, { preset }), token, signal);
  } catch (err) {
    pc.close();
    throw err;
  }
}

/** Watch `stream` once: resolves to a Session whose `stream` receives the node's media. */
export async function watch({ stream, token, signal, audio = true, base = location.origin }) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const media = new MediaStream();
  pc.addEventListener("track", (event) => media.addTrack(event.track));
  try {
    pc.addTransceiver("video", { direction: "recvonly" });
    if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
    const session = await negotiate(pc, endpoint("whep", stream, base), token, signal);
    session.stream = media;
    return session;
  } catch (err) {
    pc.close();
    throw err;
  }
}

/**
 * Watch `stream`, retrying while nobody publishes it (409, or 503 with Retry-After) after as
 * many seconds as the node asks; `onWaiting(seconds, detail)` is told before each wait.
 */
export async function watchWhenPublished(options, onWaiting) {
  for (;;) {
    try {
      return await watch(options);
    } catch (err) {
      const retryable = err instanceof SignallingError && (err.status === 409 || (err.status === 503 && err.retryAfterS));
      if (!retryable) throw err;
      const seconds = err.retryAfterS ?? 2;
      onWaiting?.(seconds, err.detail);
      await sleep(seconds * 1000, options.signal);
    }
  }
}

/**
 * Resolves when a session's media has ended: the peer failed or closed, the node closed the
 * DTLS transport, or the connection stayed disconnected for `graceMs`.
 */
export function sessionEnded(session, graceMs = 4000) {
  const { pc } = session;
  return new Promise((resolve) => {
    let graceTimer = null;
    const transports = new Set(pc.getTransceivers().map((t) => t.receiver.transport || t.sender.transport).filter(Boolean));
    const finish = (reason) => {
      clearTimeout(graceTimer);
      clearInterval(poll);
      pc.removeEventListener("connectionstatechange", check);
      for (const transport of transports) transport.removeEventListener("statechange", check);
      resolve(reason);
    };
    const check = () => {
      if (session.closed || pc.connectionState === "closed") return finish("closed");
      if (pc.connectionState === "failed") return finish("the connection failed");
      for (const transport of transports) if (transport.state === "closed" || transport.state === "failed") return finish("the node ended the session");
      if (pc.connectionState === "disconnected") {
        graceTimer ??= setTimeout(() => finish("the connection was lost"), graceMs);
      } else if (graceTimer !== null) {
        clearTimeout(graceTimer);
        graceTimer = null;
      }
    };
    // session.close() does not fire connectionstatechange; a slow poll notices it.
    const poll = setInterval(check, 1000);
    pc.addEventListener("connectionstatechange", check);
    for (const transport of transports) transport.addEventListener("statechange", check);
    check();
  });
}

/**
 * The page's bearer token: from `#token=…` (never sent to the server, so never in an access log
 * or a Referer), or from a legacy `?token=…`; either is then removed from the address bar (and
 * so from the history) and kept in this tab's session storage under `key`, where a reload finds
 * it again.
 */
export function pageToken(key) {
  const hash = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const given = hash.get("token") || query.get("token");
  if (given) sessionStorage.setItem(key, given);
  if (hash.has("token") || query.has("token")) {
    hash.delete("token");
    query.delete("token");
    const search = query.toString();
    const fragment = hash.toString();
    history.replaceState(history.state, "", `${location.pathname}${search ? `?${search}` : ""}${fragment ? `#${fragment}` : ""}`);
  }
  return sessionStorage.getItem(key) || undefined;
}

/**
 * FrameMeter: counts the frames a <video> element presents and calls back on each one.
 *
 * It uses requestVideoFrameCallback where the browser has it (one call per presented frame);
 * elsewhere it samples getVideoPlaybackQuality() four times a second and calls back on each
 * sample instead.
 */

const WINDOW_MS = 1000;

export class FrameMeter {
  /** `onFrame(nowMs)` runs for every presented frame (or sample, without rVFC). */
  constructor(video, onFrame = () => {}) {
    this.video = video;
    this.onFrame = onFrame;
    this.presented = 0;
    this.times = [];
    this.stopped = false;
    this.handle = null;
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      const tick = () => {
        if (this.stopped) return;
        this.record(performance.now(), 1);
        this.handle = video.requestVideoFrameCallback(tick);
      };
      this.handle = video.requestVideoFrameCallback(tick);
    } else {
      let last = 0;
      this.timer = setInterval(() => {
        const total = video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
        if (total > last) this.record(performance.now(), total - last);
        last = total;
      }, 250);
    }
  }

  record(now, count) {
    this.presented += count;
    for (let i = 0; i < count; i++) this.times.push(now);
    this.prune(now);
    this.onFrame(now);
  }

  prune(now) {
    while (this.times.length && this.times[0] < now - WINDOW_MS) this.times.shift();
  }

  /** Frames presented during the last second. */
  get fps() {
    this.prune(performance.now());
    return this.times.length;
  }

  stop() {
    this.stopped = true;
    if (this.handle !== null && this.video.cancelVideoFrameCallback) this.video.cancelVideoFrameCallback(this.handle);
    clearInterval(this.timer);
  }
}

/** The median of a non-empty list of numbers. */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

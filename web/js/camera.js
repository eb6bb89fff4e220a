/**
 * The camera as the webcam page publishes it.
 *
 * `openCamera()` asks for 1280×720 at 30 fps with the microphone, and for video alone when that
 * fails. `StampedCamera` redraws every camera frame into a canvas and draws the delay stamp on
 * top; the canvas's captured track is what gets published. Browsers stop painting hidden pages,
 * which would freeze a canvas, so `track()` is the raw camera track while the page is hidden or
 * stamping is off (the page swaps tracks with RTCRtpSender.replaceTrack; same size, no
 * renegotiation).
 */

import { fitsStamp, writeStamp } from "./stamp.js";

const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

function cameraErrorText(err) {
  switch (err?.name) {
    case "NotAllowedError":
      return "camera access was denied; allow it in the browser's site settings and press Start again";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no usable camera was found";
    case "NotReadableError":
      return "the camera is busy (another application may be using it)";
    default:
      return `the camera could not be opened (${err?.message || err})`;
  }
}

/** A MediaStream with one video track and, when granted, one audio track. */
export async function openCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this page needs a secure context for the camera: open it over https or on localhost");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ video: VIDEO, audio: true });
  } catch (withAudio) {
    try {
      return await navigator.mediaDevices.getUserMedia({ video: VIDEO });
    } catch (videoOnly) {
      throw new Error(cameraErrorText(videoOnly.name === "NotAllowedError" ? videoOnly : withAudio));
    }
  }
}

export class StampedCamera {
  /** `video` plays the camera (already has its size); `fps` caps the canvas capture rate. */
  constructor(video, cameraTrack, fps = 30) {
    this.video = video;
    this.cameraTrack = cameraTrack;
    this.canvas = document.createElement("canvas");
    this.canvas.width = video.videoWidth;
    this.canvas.height = video.videoHeight;
    this.ctx = this.canvas.getContext("2d", { alpha: false });
    this.canvasTrack = this.canvas.captureStream(fps).getVideoTracks()[0];
    // An effects node wants a steady input size: under load, drop frames rather than resolution.
    for (const track of [this.canvasTrack, this.cameraTrack]) track.contentHint = "detail";
    this.stamping = true;
    this.stopped = false;
    this.useFrameCallback = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
    this.draw = this.draw.bind(this);
    this.draw();
  }

  get width() {
    return this.canvas.width;
  }

  get height() {
    return this.canvas.height;
  }

  /** Whether frames leave with a stamp: stamping is on, the frame fits it, the page is visible. */
  get stamped() {
    return this.stamping && fitsStamp(this.width, this.height) && document.visibilityState === "visible";
  }

  /** The track to publish right now. */
  track() {
    return this.stamped ? this.canvasTrack : this.cameraTrack;
  }

  draw() {
    if (this.stopped) return;
    const { video, canvas, ctx } = this;
    if (video.videoWidth && (video.videoWidth !== canvas.width || video.videoHeight !== canvas.height)) {
      canvas.width = video.videoWidth; // the camera changed its size (rotation, a new device)
      canvas.height = video.videoHeight;
    }
    if (video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA) {
      ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
      if (this.stamping && fitsStamp(canvas.width, canvas.height)) writeStamp(ctx, performance.now());
    }
    this.handle = this.useFrameCallback ? video.requestVideoFrameCallback(this.draw) : requestAnimationFrame(this.draw);
  }

  stop() {
    this.stopped = true;
    if (this.useFrameCallback) this.video.cancelVideoFrameCallback?.(this.handle);
    else cancelAnimationFrame(this.handle);
    this.canvasTrack.stop();
  }
}

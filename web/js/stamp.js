/**
 * The delay stamp: a millisecond clock value drawn into a frame as a row of black/white cells,
 * and read back from a frame that went through the node. Twin of livegen/testing/stamp.py.
 *
 * Spec v1: 16 px cells in one row starting at (16, 16); cell 0 white, cell 1 black (references),
 * cells 2..25 the 24-bit value MSB first, cells 26..33 check bits `b0 ^ b1 ^ b2 ^ 0xA5` MSB first
 * (b0..b2: the value's bytes, big-endian). White is 1. A reader takes the mean luma of each
 * cell's central 8×8 px and thresholds midway between the references; a stamp whose references
 * differ by less than 48 or whose check bits disagree reads as null (some effects destroy it).
 */

export const CELL = 16;
export const ORIGIN_X = 16;
export const ORIGIN_Y = 16;
export const DATA_BITS = 24;
export const CHECK_BITS = 8;
export const CELLS = 2 + DATA_BITS + CHECK_BITS;
export const MODULO = 2 ** DATA_BITS;
export const MIN_CONTRAST = 48;
export const STRIP_WIDTH = CELLS * CELL;
/** The smallest frame the stamp is drawn into (the strip plus a 16 px margin around it). */
export const MIN_FRAME_WIDTH = ORIGIN_X + STRIP_WIDTH;
export const MIN_FRAME_HEIGHT = ORIGIN_Y + CELL + 16;

const QUARTER = CELL / 4;

/** The clock the stamp carries: whole milliseconds of `performance.now()`, mod 2^24. */
export function stampClock(nowMs = performance.now()) {
  return Math.floor(nowMs) % MODULO;
}

function checkByte(value) {
  return ((value >> 16) & 0xff) ^ ((value >> 8) & 0xff) ^ (value & 0xff) ^ 0xa5;
}

function bits(value, count) {
  const out = [];
  for (let i = count - 1; i >= 0; i--) out.push((value >> i) & 1);
  return out;
}

/** The 34 cells (1 = white) that carry `valueMs mod 2^24`. */
export function stampCells(valueMs) {
  const value = ((Math.floor(valueMs) % MODULO) + MODULO) % MODULO;
  return [1, 0, ...bits(value, DATA_BITS), ...bits(checkByte(value), CHECK_BITS)];
}

/** Whether a frame of this size has room for the stamp. */
export function fitsStamp(width, height) {
  return width >= MIN_FRAME_WIDTH && height >= MIN_FRAME_HEIGHT;
}

/** Draw the stamp of `valueMs` into a 2D canvas context, in its pixel coordinates. */
export function writeStamp(ctx, valueMs) {
  stampCells(valueMs).forEach((bit, index) => {
    ctx.fillStyle = bit ? "#ffffff" : "#000000";
    ctx.fillRect(ORIGIN_X + index * CELL, ORIGIN_Y, CELL, CELL);
  });
}

/**
 * Decode the strip from RGBA pixels (`data`, `width` px per row) whose row 0, column 0 is the
 * strip's top-left corner, i.e. frame pixel (16, 16). Returns the value or null.
 */
export function decodeStrip(data, width) {
  const means = [];
  for (let cell = 0; cell < CELLS; cell++) {
    let sum = 0;
    for (let y = QUARTER; y < CELL - QUARTER; y++) {
      let i = (y * width + cell * CELL + QUARTER) * 4;
      for (let x = QUARTER; x < CELL - QUARTER; x++, i += 4) {
        sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      }
    }
    means.push(sum / (CELL / 2) ** 2);
  }
  const [white, black] = means;
  if (white - black < MIN_CONTRAST) return null;
  const threshold = (white + black) / 2;
  let value = 0;
  let check = 0;
  for (let i = 0; i < DATA_BITS; i++) value = value * 2 + (means[2 + i] > threshold ? 1 : 0);
  for (let i = 0; i < CHECK_BITS; i++) check = check * 2 + (means[2 + DATA_BITS + i] > threshold ? 1 : 0);
  return check === checkByte(value) ? value : null;
}

/** Milliseconds from a stamped value to `nowMs`, across the 2^24 wrap. */
export function elapsedMs(stamped, nowMs = performance.now()) {
  return (((stampClock(nowMs) - stamped) % MODULO) + MODULO) % MODULO;
}

/** Reads stamps out of video frames (or any drawable) through a small strip-sized canvas. */
export class StampReader {
  constructor() {
    this.canvas =
      typeof OffscreenCanvas === "function"
        ? new OffscreenCanvas(STRIP_WIDTH, CELL)
        : Object.assign(document.createElement("canvas"), { width: STRIP_WIDTH, height: CELL });
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
  }

  /**
   * The stamped value of the frame `source` shows now, or null. `width` and `height` are the
   * source's intrinsic size (videoWidth/videoHeight for a video): the strip is cut out in those
   * pixels, whatever size the element is displayed at.
   */
  read(source, width, height) {
    if (width < ORIGIN_X + STRIP_WIDTH || height < ORIGIN_Y + CELL) return null;
    this.ctx.drawImage(source, ORIGIN_X, ORIGIN_Y, STRIP_WIDTH, CELL, 0, 0, STRIP_WIDTH, CELL);
    return decodeStrip(this.ctx.getImageData(0, 0, STRIP_WIDTH, CELL).data, STRIP_WIDTH);
  }
}

/**
 * The look panel of the webcam page: background (blur strength, an uploaded image, a colour, a
 * key colour, a generated scene) and overlays (a lower third, a clock), changed live.
 *
 * The controls are read from the stream's current chain (a preset's effects) and turned back
 * into a whole chain: `segmentation` + `background` when the background is replaced, `overlays`
 * with a lower third and a clock, and every other effect of the chain kept as it was. The chain
 * is sent with one PATCH /api/streams/{stream}, which the node swaps in between two frames.
 */

import { authHeaders, requestJson } from "./whip.js";

const DEBOUNCE_MS = 250;
const LOWER_THIRD = { type: "lower_third", anchor: "bottom-left", offset: [48, 56] };
const CLOCK = { type: "clock", format: "%H:%M:%S", anchor: "top-right", offset: [32, 28] };

export class LookPanel {
  /**
   * @param {object} ui form elements: form, mode, blur, file, color, prompt, title, subtitle, clock, help
   * @param {object} options token; onError(message); onApplied(info)
   */
  constructor(ui, { token, onError, onApplied }) {
    Object.assign(this, { ui, token, onError, onApplied });
    this.stream = null; // set while publishing
    this.base = []; // the chain the controls were read from
    this.imageRef = null;
    this.videoRef = null;
    this.dirty = false;
    this.timer = null;
    this.busy = Promise.resolve();
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.apply();
    });
    for (const control of [ui.mode, ui.blur, ui.color, ui.clock]) {
      control.addEventListener(control === ui.blur ? "input" : "change", () => this.changed());
    }
    ui.file.addEventListener("change", () => this.upload());
    this.showFields();
  }

  /** Read the controls from a chain (a preset's or the stream's effects). */
  load(effects) {
    this.base = effects.map((e) => ({ name: e.name, params: { ...(e.params || {}) } }));
    const background = this.base.find((e) => e.name === "background")?.params;
    const layers = this.base.find((e) => e.name === "overlays")?.params.layers || [];
    const lower = layers.find((l) => l.type === "lower_third");
    const { ui } = this;
    ui.mode.value = background?.mode || "off";
    if (background?.blur !== undefined) ui.blur.value = background.blur;
    if (typeof background?.color === "string") ui.color.value = background.color;
    if (background?.image) this.imageRef = background.image;
    if (background?.video) this.videoRef = background.video;
    ui.prompt.value = background?.prompt || "";
    ui.title.value = lower?.title || "";
    ui.subtitle.value = lower?.subtitle || "";
    ui.clock.checked = layers.some((l) => l.type === "clock");
    this.dirty = false;
    this.showFields();
  }

  /** The chain the controls describe. */
  effects() {
    const { ui } = this;
    const mode = ui.mode.value;
    const kept = this.base.filter((e) => !["segmentation", "background", "overlays"].includes(e.name));
    const chain = [];
    if (mode !== "off") {
      const segmentation = this.base.find((e) => e.name === "segmentation");
      chain.push(segmentation || { name: "segmentation", params: {} });
      const old = this.base.find((e) => e.name === "background")?.params || {};
      const params = { ...old, mode };
      if (mode === "blur") params.blur = Number(ui.blur.value);
      if (mode === "color") params.color = ui.color.value;
      if (mode === "image") params.image = this.imageRef;
      if (mode === "video") params.video = this.videoRef;
      if (mode === "generated") params.prompt = ui.prompt.value.trim();
      chain.push({ name: "background", params: dropUnused(params) });
    }
    chain.push(...kept);
    const oldLayers = this.base.find((e) => e.name === "overlays")?.params.layers || [];
    const layers = oldLayers.filter((l) => l.type !== "lower_third" && l.type !== "clock");
    const title = ui.title.value.trim();
    if (title) {
      const lower = oldLayers.find((l) => l.type === "lower_third") || LOWER_THIRD;
      layers.push({ ...lower, title, subtitle: ui.subtitle.value.trim() });
    }
    if (ui.clock.checked) layers.push(oldLayers.find((l) => l.type === "clock") || CLOCK);
    if (layers.length) {
      const overlays = this.base.find((e) => e.name === "overlays");
      chain.push({ name: "overlays", params: { ...(overlays?.params || {}), layers } });
    }
    return chain;
  }

  showFields() {
    const mode = this.ui.mode.value;
    for (const label of this.ui.form.querySelectorAll("[data-for]")) {
      label.hidden = label.dataset.for !== mode;
    }
    const hints = {
      image: this.imageRef ? `image ${this.imageRef}` : "choose an image to upload",
      video: this.videoRef ? `video ${this.videoRef}` : "this preset has no background video",
      transparent: "the background becomes a key colour for a compositor downstream",
      generated: "needs a GPU node with a model; until then the node shows its fallback",
    };
    this.ui.help.textContent = hints[mode] || "";
  }

  changed() {
    this.dirty = true;
    this.showFields();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.apply(), DEBOUNCE_MS);
  }

  /** Publishing started (or stopped, with null): send what was changed before. */
  attach(stream) {
    this.stream = stream;
    if (stream && this.dirty) this.apply();
  }

  async upload() {
    const file = this.ui.file.files?.[0];
    if (!file) return;
    this.ui.help.textContent = `uploading ${file.name}…`;
    try {
      const response = await fetch("/api/assets", {
        method: "POST",
        headers: { ...authHeaders(this.token), "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.detail || `upload refused (${response.status})`);
      this.imageRef = body.ref;
      this.ui.mode.value = "image";
      this.changed();
    } catch (err) {
      this.onError(`cannot upload ${file.name}: ${err.message}`);
      this.showFields();
    }
  }

  /** PATCH the stream with the chain of the controls (queued, one at a time). */
  apply() {
    clearTimeout(this.timer);
    this.dirty = true;
    if (!this.stream) return this.busy;
    const stream = this.stream;
    this.busy = this.busy.then(async () => {
      if (!this.dirty || this.stream !== stream) return;
      this.dirty = false;
      const effects = this.effects();
      if (effects.some((e) => e.name === "background" && e.params.mode === "image" && !e.params.image)) {
        this.ui.help.textContent = "choose an image to upload";
        return;
      }
      try {
        const info = await requestJson(`/api/streams/${encodeURIComponent(stream)}`, {
          method: "PATCH",
          body: { effects },
          token: this.token,
        });
        this.base = info.effects;
        this.onApplied(info);
      } catch (err) {
        this.onError(err.detail || err.message || String(err));
      }
    });
    return this.busy;
  }
}

/** `params` without what its mode does not use (a stale image ref would fail validation). */
function dropUnused(params) {
  const unused = {
    blur: ["image", "video", "prompt"],
    color: ["image", "video", "prompt", "blur"],
    image: ["video", "prompt", "blur"],
    video: ["image", "prompt", "blur"],
    transparent: ["image", "video", "prompt", "blur"],
  }[params.mode];
  const out = { ...params };
  for (const key of unused || []) delete out[key];
  return out;
}

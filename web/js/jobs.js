/**
 * The jobs table of the operator page: the newest file jobs (GET /api/jobs) with their state,
 * progress, attempts and error, and a Cancel button for those queued or running.
 *
 * Polls every two seconds with the operator token the page keeps in sessionStorage (set by the
 * token form of ops.js). State for tests and scripts: `window.livegenJobs`.
 */

import { requestJson } from "./whip.js";

const POLL_MS = 2000;
const LIMIT = 20;
const $ = (id) => document.getElementById(id);
const state = { jobs: [], lastError: null, polls: 0 };
window.livegenJobs = state;

const token = () => sessionStorage.getItem("livegen-ops-token") || undefined;

function cell(text, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (title) td.title = title;
  return td;
}

function row(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  const progress = job.state === "running" && job.frames_total
    ? `${Math.round(job.progress * 100)}% · ${job.frames_done}/${job.frames_total}` + (job.eta_s == null ? "" : ` · ${Math.round(job.eta_s)} s left`)
    : job.state === "succeeded" ? "100%" : "";
  const status = cell(job.state);
  status.className = `state state-${job.state}`;
  const error = job.error ? `${job.error.kind}: ${job.error.message}` : "";
  const actions = document.createElement("td");
  if (job.state === "queued" || job.state === "running") {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "danger";
    cancel.textContent = "Cancel";
    cancel.setAttribute("aria-label", `cancel job ${job.id}`);
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await requestJson(`/api/jobs/${job.id}`, { method: "DELETE", token: token() });
      } catch (err) {
        $("jobs-error").textContent = err.detail || err.message || String(err);
      }
      poll();
    });
    actions.append(cancel);
  } else if (job.state === "succeeded" && job.output) {
    const link = document.createElement("a");
    link.href = job.output.url;
    link.textContent = "output";
    actions.append(link);
  }
  tr.append(
    cell(job.id.slice(0, 8), job.id),
    status,
    cell(job.chain.join(" → ")),
    cell(progress),
    cell(`${job.attempts}/${job.max_attempts}`),
    cell(new Date(job.created * 1000).toLocaleTimeString()),
    cell(error.length > 80 ? `${error.slice(0, 80)}…` : error, error),
    actions,
  );
  return tr;
}

let timer = null;
async function poll() {
  clearTimeout(timer);
  try {
    const answer = await requestJson(`/api/jobs?limit=${LIMIT}`, { token: token() });
    state.jobs = answer.jobs;
    state.lastError = null;
    state.polls++;
    $("jobs-error").textContent = "";
    $("job-count").textContent = `(${answer.jobs.length}${answer.next ? "+" : ""})`;
    $("no-jobs").hidden = answer.jobs.length > 0;
    $("jobs-table").hidden = answer.jobs.length === 0;
    $("jobs-rows").replaceChildren(...answer.jobs.map(row));
  } catch (err) {
    state.lastError = err.detail || err.message || String(err);
    $("jobs-error").textContent = `jobs: ${state.lastError}`;
  }
  timer = setTimeout(poll, POLL_MS);
}

poll();

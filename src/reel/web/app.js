// Reel playground: one plain ES module, no framework, no build step.
// It uses only the public API (the same calls as the SDKs), with the key the user enters.

const $ = (id) => document.getElementById(id);

// WaveSpeed's aspect ratios and the output size each produces.
const RATIOS = [
  { name: "16:9", width: 1280, height: 720 },
  { name: "9:16", width: 720, height: 1280 },
  { name: "4:3", width: 1104, height: 832 },
  { name: "3:4", width: 832, height: 1104 },
  { name: "1:1", width: 960, height: 960 },
];
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];
const TERMINAL = new Set(["completed", "failed", "cancelled", "deleted", "timeout"]);
const DEFAULT_MODEL = "runwayml/gen4-turbo";
const DEFAULT_TEXT_MODEL = "wavespeed-ai/wan-2.2/t2v-5b-720p";
const POLL_MS = 500;
const HISTORY_REFRESH_MS = 1500;
const HISTORY_PAGE_SIZE = 8;
const KEY_STORAGE = "reel.apiKey";
const INPUTS_STORAGE = "reel.inputs"; // prediction id -> input image URL, for history thumbnails

const state = {
  file: null, // a File chosen, dropped or pasted; uploaded on submit
  previewUrl: null, // object URL of that file
  uploads: new WeakMap(), // File -> download_url, so resubmitting does not upload again
  imageSize: null, // {width, height} of the chosen image once it has loaded
  models: [],
  current: null, // id of the prediction shown in the result panel
  busy: false,
  historyPage: 1,
  historyTimer: null,
};

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// ---- the API -------------------------------------------------------------------------------

function apiKey() {
  return $("key").value.trim();
}

async function api(method, path, body, { auth = true } = {}) {
  const headers = {};
  if (auth) {
    if (!apiKey()) throw new ApiError("Enter your API key first (create one with `make key`).", 0);
    headers.Authorization = `Bearer ${apiKey()}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(`Could not reach the server (${err.message}).`, 0);
  }
  return envelopeData(response);
}

// Every answer is {code, message, data}; an error's message names the field and what to do.
async function envelopeData(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // not JSON: fall through to the HTTP status
  }
  if (!response.ok || !payload || payload.code !== 200) {
    throw new ApiError(payload?.message || `HTTP ${response.status} ${response.statusText}`, response.status);
  }
  return payload.data;
}

// The two-step upload: ask for a ticket, PUT the bytes, use the download_url as `image`.
async function uploadFile(file) {
  if (state.uploads.has(file)) return state.uploads.get(file);
  const ticket = await api("POST", "/api/v3/media/uploads", {
    filename: file.name || "image",
    size: file.size,
    content_type: file.type || undefined,
  });
  // The ticket's URL is on the server's public URL, which may name this server differently from
  // the address in the address bar; the path is what matters, and same-origin needs no CORS.
  const target = new URL(ticket.upload.url, location.href);
  let response;
  try {
    response = await fetch(target.pathname + target.search, {
      method: "PUT",
      headers: ticket.upload.headers || {},
      body: file,
    });
  } catch (err) {
    throw new ApiError(`Upload failed (${err.message}).`, 0);
  }
  await envelopeData(response);
  state.uploads.set(file, ticket.download_url);
  return ticket.download_url;
}

// ---- messages --------------------------------------------------------------------------------

function showAlert(message) {
  const alert = $("alert");
  alert.textContent = message;
  alert.hidden = false;
}

function clearAlert() {
  $("alert").hidden = true;
  $("alert").textContent = "";
}

function setStatus(text, progress) {
  $("status").textContent = text;
  const bar = $("progress");
  if (progress === null) {
    bar.removeAttribute("value"); // indeterminate
    $("percent").textContent = "";
  } else if (progress !== undefined) {
    bar.value = progress;
    $("percent").textContent = `${Math.round(progress * 100)}%`;
  }
}

// ---- the API key -----------------------------------------------------------------------------

function initKey() {
  $("key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("key").addEventListener("change", () => {
    const key = apiKey();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    clearAlert();
    state.historyPage = 1;
    loadHistory();
  });
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("key").value = "";
    $("history").replaceChildren();
    $("history-page").textContent = "";
    setStatus("Key forgotten: it is no longer stored in this browser.");
    $("key").focus();
  });
}

// ---- the image -------------------------------------------------------------------------------

function setFile(file) {
  if (!IMAGE_TYPES.includes(file.type)) {
    showAlert(`image: ${file.name || "this file"} is ${file.type || "of an unknown type"}; use PNG, JPEG or WebP.`);
    return;
  }
  clearAlert();
  state.file = file;
  $("image-url").value = "";
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  $("image-status").textContent = `${file.name || "Pasted image"} (${Math.ceil(file.size / 1024)} KB), uploaded when you generate.`;
  showPreviewImage(state.previewUrl);
}

function setImageUrl(url) {
  state.file = null;
  if (!url) {
    $("image-status").textContent = "";
    showPreviewImage(null);
    return;
  }
  $("image-status").textContent = "The server fetches this URL when you generate.";
  showPreviewImage(url);
}

function showPreviewImage(src) {
  const img = $("preview-image");
  state.imageSize = null;
  if (src) {
    img.src = src;
  } else {
    img.removeAttribute("src");
    img.hidden = true;
  }
  updatePreview();
}

function initImage() {
  const zone = $("dropzone");
  $("file").addEventListener("change", () => {
    if ($("file").files.length) setFile($("file").files[0]);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = [...(event.dataTransfer?.files || [])][0];
    if (file) setFile(file);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) setFile(file);
  });
  $("image-url").addEventListener("change", () => setImageUrl($("image-url").value.trim()));
  const img = $("preview-image");
  img.addEventListener("load", () => {
    state.imageSize = { width: img.naturalWidth, height: img.naturalHeight };
    img.hidden = false;
    updatePreview();
  });
  img.addEventListener("error", () => {
    if (!img.getAttribute("src")) return;
    img.hidden = true;
    $("image-status").textContent = "No preview for this image here; the server will still try to fetch it.";
    updatePreview();
  });
}

// ---- aspect ratio and the output frame preview -----------------------------------------------

// The server's default: the ratio nearest the image's, compared on a log scale.
function closestRatio(width, height) {
  const target = Math.log(width / height);
  return RATIOS.reduce((best, r) =>
    Math.abs(target - Math.log(r.width / r.height)) < Math.abs(target - Math.log(best.width / best.height)) ? r : best,
  );
}

function chosenRatio() {
  const value = document.querySelector('input[name="ratio"]:checked')?.value || "auto";
  if (value !== "auto") return { value, ratio: RATIOS.find((r) => r.name === value) };
  const size = state.imageSize;
  return { value, ratio: size ? closestRatio(size.width, size.height) : RATIOS[0] };
}

function initRatios() {
  const group = $("ratios");
  for (const option of [{ name: "auto" }, ...RATIOS]) {
    const label = document.createElement("label");
    label.className = "ratio";
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "ratio", value: option.name, checked: option.name === "auto" });
    const icon = document.createElement("span");
    icon.className = `ratio-icon r-${option.name.replace(":", "-")}`;
    icon.setAttribute("aria-hidden", "true");
    const text = document.createElement("span");
    text.className = "ratio-name";
    text.textContent = option.name === "auto" ? "Auto" : option.name;
    const size = document.createElement("small");
    size.textContent = option.width ? `${option.width}×${option.height}` : "closest";
    if (option.name === "auto") size.id = "auto-ratio";
    label.append(input, icon, text, size);
    group.append(label);
    input.addEventListener("change", updatePreview);
  }
  window.addEventListener("resize", updatePreview);
}

function updatePreview() {
  const { value, ratio } = chosenRatio();
  const size = state.imageSize;
  $("auto-ratio").textContent = size ? `→ ${closestRatio(size.width, size.height).name}` : "closest";
  // Fit what is shown (the image, or the empty output frame) into the stage.
  const shown = size || ratio;
  const maxWidth = Math.max(160, $("preview-stage").clientWidth - 2);
  const maxHeight = 240;
  const scale = Math.min(maxWidth / shown.width, maxHeight / shown.height);
  const box = $("preview-box");
  box.style.width = `${Math.round(shown.width * scale)}px`;
  box.style.height = `${Math.round(shown.height * scale)}px`;
  box.classList.toggle("empty", !size);
  // The sandbox (like the hosted models) centre-crops the image to the output ratio.
  let cropWidth = 1;
  let cropHeight = 1;
  if (size) {
    const target = ratio.width / ratio.height;
    if (size.width / size.height > target) cropWidth = (size.height * target) / size.width;
    else cropHeight = size.width / target / size.height;
  }
  const crop = $("preview-crop");
  crop.style.left = `${((1 - cropWidth) / 2) * 100}%`;
  crop.style.top = `${((1 - cropHeight) / 2) * 100}%`;
  crop.style.width = `${cropWidth * 100}%`;
  crop.style.height = `${cropHeight * 100}%`;
  const how = value === "auto" ? "closest to the image" : "chosen";
  $("preview-caption").textContent = size
    ? `Output ${ratio.width} × ${ratio.height} (${ratio.name}, ${how}): the area inside the frame is kept.`
    : `Output ${ratio.width} × ${ratio.height} (${ratio.name}). Choose an image to see the crop.`;
}

// ---- models ----------------------------------------------------------------------------------

async function loadModels() {
  const select = $("model");
  try {
    state.models = await api("GET", "/api/v3/models", undefined, { auth: false });
  } catch (err) {
    showAlert(`Could not list the models: ${err.message}`);
    state.models = [{ id: DEFAULT_MODEL, title: "", sandbox: false, ready: true, durations: [5, 10], parameters: [] }];
  }
  select.replaceChildren(
    ...state.models.map((model) => {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent =
        model.id + (model.sandbox ? " (sandbox — not AI)" : "") + (model.ready ? "" : " — not ready");
      return option;
    }),
  );
  if (state.models.some((m) => m.id === DEFAULT_MODEL)) select.value = DEFAULT_MODEL;
  select.addEventListener("change", showModel);
  showModel();
}

function showModel() {
  const model = state.models.find((m) => m.id === $("model").value);
  if (!model) return;
  const durations = $("duration");
  durations.replaceChildren(
    ...(model.durations || []).map((seconds) => {
      const option = document.createElement("option");
      option.value = String(seconds);
      option.textContent = `${seconds} s`;
      return option;
    }),
  );
  const parameters = model.parameters || [];
  durations.disabled = !parameters.includes("duration") || durations.options.length === 0;
  $("seed").disabled = !parameters.includes("seed");
  const notes = [];
  if (model.sandbox) {
    notes.push(
      takesImage(model)
        ? "Sandbox backend: it animates your image with a camera move and stamps “SANDBOX”. It is not AI generation."
        : "Sandbox backend: it animates a test card labelled “SANDBOX TEXT-TO-VIDEO”. It is not AI generation.",
    );
  }
  if (!model.ready && model.reason) notes.push(`Not ready: ${model.reason}`);
  $("model-note").textContent = notes.join(" ");
  $("model-note").hidden = notes.length === 0;
}

// ---- submit, poll, cancel --------------------------------------------------------------------

function setBusy(busy) {
  state.busy = busy;
  $("submit").disabled = busy;
  $("submit").textContent = busy ? "Generating…" : "Generate video";
}

function buildInput(image) {
  const input = { prompt: $("prompt").value.trim() };
  if (image) input.image = image;
  const { value } = chosenRatio();
  if (value !== "auto") input.aspect_ratio = value;
  if (!$("duration").disabled && $("duration").value) input.duration = Number($("duration").value);
  const seed = $("seed").value.trim();
  if (!$("seed").disabled && seed !== "") input.seed = Number(seed);
  return input;
}

// A model takes an image unless the listing says otherwise (text-to-video ids have no `image`).
function takesImage(model) {
  return (model.parameters || ["image"]).includes("image");
}

// With an image the chosen model must be image-to-video, without one text-to-video: the
// chosen one when it fits, else its counterpart (i2v <-> t2v in the id), else the default.
function modelFor(hasImage) {
  const chosen = $("model").value;
  const fits = (id) => state.models.some((m) => m.id === id && takesImage(m) === hasImage);
  if (fits(chosen)) return chosen;
  const counterpart = hasImage ? chosen.replace("/t2v", "/i2v") : chosen.replace("/i2v", "/t2v");
  if (fits(counterpart)) return counterpart;
  const fallback = hasImage ? DEFAULT_MODEL : DEFAULT_TEXT_MODEL;
  if (fits(fallback)) return fallback;
  return state.models.find((m) => takesImage(m) === hasImage)?.id || null;
}

async function onSubmit(event) {
  event.preventDefault();
  if (state.busy) return;
  clearAlert();
  const url = $("image-url").value.trim();
  const hasImage = Boolean(state.file || url);
  const model = modelFor(hasImage);
  const problem = !apiKey()
    ? ["key", "Enter your API key first (create one with `make key`)."]
    : !$("prompt").value.trim()
      ? ["prompt", hasImage ? "Write a prompt describing the motion you want." : "Write a prompt describing the video you want."]
      : !model
        ? ["file", "Choose an image file, drop one on the form, or enter an image URL: no text-to-video model is served here."]
        : null;
  if (problem) {
    showAlert(problem[1]);
    $(problem[0]).focus();
    return;
  }
  setBusy(true);
  $("player").replaceChildren();
  $("error").hidden = true;
  let submitted = false;
  try {
    let image = url;
    if (state.file) {
      setStatus("Uploading the image…", null);
      image = await uploadFile(state.file);
    }
    setStatus(hasImage ? "Submitting…" : `No image: text-to-video with ${model}. Submitting…`, null);
    const prediction = await api("POST", `/api/v3/${model}`, buildInput(hasImage ? image : null));
    submitted = true;
    if (hasImage) rememberInput(prediction.id, image);
    state.current = prediction.id;
    $("cancel").disabled = false;
    showPrediction(prediction);
    loadHistory();
    await poll(prediction.id);
  } catch (err) {
    showAlert(err.message);
    if (!submitted) setStatus("Not submitted.", 0);
  } finally {
    setBusy(false);
    $("cancel").disabled = true;
    loadHistory();
  }
}

async function poll(id) {
  let failures = 0;
  while (state.current === id) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    let prediction;
    try {
      prediction = await api("GET", `/api/v3/predictions/${encodeURIComponent(id)}/result`);
      failures = 0;
    } catch (err) {
      if (err.status !== 0 || ++failures > 10) throw err; // keep going through brief network blips
      continue;
    }
    if (state.current !== id) return;
    showPrediction(prediction);
    if (TERMINAL.has(prediction.status)) return;
  }
}

function queuedText(position) {
  if (!Number.isInteger(position)) return "Queued: waiting for a worker…";
  if (position === 0) return "Queued: next to start…";
  return `Queued: ${position} ahead of you…`;
}

function showPrediction(prediction) {
  const progress = prediction.status === "completed" ? 1 : prediction.progress || 0;
  const seconds = (prediction.timings?.inference || 0) / 1000;
  const text = {
    created: queuedText(prediction.queue_position),
    processing: `Generating… ${Math.round(progress * 100)}%`,
    completed: `Done${seconds ? ` in ${seconds.toFixed(1)} s` : ""}.`,
    failed: "Failed.",
    cancelled: "Cancelled.",
  }[prediction.status] || `Status: ${prediction.status}`;
  setStatus(`${text} (${prediction.id})`, progress);
  if (prediction.status === "completed" && prediction.outputs.length) showVideo(prediction);
  if (prediction.status === "failed") {
    const message = `Generation failed: ${prediction.error || "no reason given"}`;
    showAlert(message);
    $("error").textContent = message;
    $("error").hidden = false;
  }
}

function showVideo(prediction) {
  const url = prediction.outputs[0];
  const video = document.createElement("video");
  Object.assign(video, { controls: true, autoplay: true, muted: true, loop: true, playsInline: true, src: url });
  video.setAttribute("aria-label", `Generated video ${prediction.id}`);
  const link = document.createElement("a");
  Object.assign(link, { href: url, download: `reel-${prediction.id}.mp4`, className: "button primary" });
  link.textContent = "Download MP4";
  $("player").replaceChildren(video, link);
  // Browsers pause muted autoplay while the video is off screen, and the result may be below.
  video.scrollIntoView({ block: "nearest" });
}

async function cancelPrediction(id) {
  clearAlert();
  try {
    const prediction = await api("POST", `/api/v3/predictions/${encodeURIComponent(id)}/cancel`, {});
    if (state.current === id) showPrediction(prediction);
  } catch (err) {
    showAlert(err.message);
  }
  loadHistory();
}

// ---- history ---------------------------------------------------------------------------------

function rememberInput(id, image) {
  if (!/^https?:/.test(image)) return;
  const inputs = JSON.parse(localStorage.getItem(INPUTS_STORAGE) || "{}");
  inputs[id] = image;
  const ids = Object.keys(inputs);
  for (const old of ids.slice(0, Math.max(0, ids.length - 200))) delete inputs[old];
  localStorage.setItem(INPUTS_STORAGE, JSON.stringify(inputs));
}

function thumbnail(prediction) {
  const frame = document.createElement("div");
  frame.className = "thumb";
  frame.setAttribute("aria-hidden", "true");
  const input = JSON.parse(localStorage.getItem(INPUTS_STORAGE) || "{}")[prediction.id];
  if (prediction.status === "completed" && prediction.outputs.length) {
    const video = document.createElement("video");
    // A media fragment makes the browser fetch and show a frame near the start.
    Object.assign(video, { muted: true, preload: "metadata", src: `${prediction.outputs[0]}#t=0.1`, tabIndex: -1 });
    frame.append(video);
  } else if (input) {
    const img = document.createElement("img");
    Object.assign(img, { src: input, alt: "", loading: "lazy" });
    frame.append(img);
  }
  return frame;
}

function historyItem(prediction) {
  const item = document.createElement("li");
  item.className = `history-item status-${prediction.status}`;
  const body = document.createElement("div");
  body.className = "history-body";
  const line = document.createElement("div");
  line.className = "history-status";
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = prediction.status;
  const when = document.createElement("span");
  when.className = "help";
  when.textContent = new Date(prediction.created_at).toLocaleString();
  line.append(badge, when);
  const title = document.createElement("div");
  title.className = "history-title";
  title.textContent = prediction.model;
  const id = document.createElement("div");
  id.className = "help";
  id.textContent = prediction.id;
  body.append(line, title, id);
  if (prediction.status === "processing") {
    const bar = document.createElement("progress");
    Object.assign(bar, { max: 1, value: prediction.progress || 0 });
    bar.setAttribute("aria-label", `Progress of ${prediction.id}`);
    body.append(bar);
  }
  if (prediction.error) {
    const error = document.createElement("p");
    error.className = "error-text";
    error.textContent = prediction.error;
    body.append(error);
  }
  const actions = document.createElement("div");
  actions.className = "history-actions";
  if (prediction.status === "completed" && prediction.outputs.length) {
    actions.append(
      button("Show", `Show video ${prediction.id}`, () => {
        showVideo(prediction);
        if (!state.busy) setStatus(`Showing ${prediction.id}.`, 1);
      }),
    );
  }
  if (prediction.status === "created" || prediction.status === "processing") {
    actions.append(button("Cancel", `Cancel ${prediction.id}`, () => cancelPrediction(prediction.id)));
  }
  item.append(thumbnail(prediction), body, actions);
  return item;
}

function button(text, label, onClick) {
  const element = document.createElement("button");
  Object.assign(element, { type: "button", className: "secondary small", textContent: text });
  element.setAttribute("aria-label", label);
  element.addEventListener("click", onClick);
  return element;
}

async function loadHistory() {
  clearTimeout(state.historyTimer);
  if (!apiKey()) {
    $("history").replaceChildren(note("Enter your API key to see its predictions."));
    return;
  }
  let page;
  try {
    page = await api("POST", "/api/v3/predictions", { page: state.historyPage, page_size: HISTORY_PAGE_SIZE });
  } catch (err) {
    $("history").replaceChildren(note(`Could not load the history: ${err.message}`));
    return;
  }
  const pages = Math.max(1, Math.ceil(page.total / HISTORY_PAGE_SIZE));
  $("history-page").textContent = `page ${page.page} of ${pages} · ${page.total} in all`;
  $("history-prev").disabled = page.page <= 1;
  $("history-next").disabled = page.page >= pages;
  $("history").replaceChildren(...(page.items.length ? page.items.map(historyItem) : [note("No predictions yet.")]));
  if (page.items.some((p) => !TERMINAL.has(p.status))) {
    state.historyTimer = setTimeout(loadHistory, HISTORY_REFRESH_MS);
  }
}

function note(text) {
  const item = document.createElement("li");
  item.className = "help";
  item.textContent = text;
  return item;
}

function initHistory() {
  $("history-refresh").addEventListener("click", loadHistory);
  $("history-prev").addEventListener("click", () => {
    state.historyPage = Math.max(1, state.historyPage - 1);
    loadHistory();
  });
  $("history-next").addEventListener("click", () => {
    state.historyPage += 1;
    loadHistory();
  });
}

// ---- start -----------------------------------------------------------------------------------

initKey();
initImage();
initRatios();
initHistory();
$("generate").addEventListener("submit", onSubmit);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("generate").requestSubmit();
});
$("cancel").addEventListener("click", () => state.current && cancelPrediction(state.current));
updatePreview();
loadModels();
loadHistory();

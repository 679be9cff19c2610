// The page's logic: read the model from /info, send the photo to /predict, draw the answer.
// Plain browser JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let photo = null;  // the photo on the page: the inside view (inside.js) sends it again

async function loadInfo() {
  const response = await fetch("/info");
  info = (await response.json()).model;
  // no checkpoint: a network before training (python -m src.inspect serve=true), its weights as initialised
  $("model").textContent = `${info.name}` + (info.checkpoint ? "" : " (before training)") +
    ` · ${info.backend} backend · ${info.precision} · ` +
    `${info.classes.length} classes` + (info.multi_label ? ` · multi-label (threshold ${info.threshold})` : "");
  $("classes").replaceChildren(...info.classes.map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    return item;
  }));
  $("cam-control").hidden = !info.cam;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function drawBars(top) {
  $("bars").replaceChildren(...top.map(({ label, probability }) => {
    const item = document.createElement("li");
    item.innerHTML = '<span class="name"></span><span class="track"><span class="bar"></span></span><span class="value"></span>';
    item.querySelector(".name").textContent = label;
    item.querySelector(".name").title = label;
    item.querySelector(".bar").style.width = `${(probability * 100).toFixed(1)}%`;
    item.querySelector(".bar").style.display = "block";
    item.querySelector(".value").textContent = `${(probability * 100).toFixed(1)}%`;
    return item;
  }));
}

async function classify(file) {
  $("error").hidden = true;
  $("label").textContent = "…";
  $("probability").textContent = "";
  $("bars").replaceChildren();
  $("cam").hidden = true;
  $("cam").removeAttribute("src");
  $("preview").src = URL.createObjectURL(file);
  $("view").hidden = false;
  photo = file;
  if (window.insidePhotoChanged) window.insidePhotoChanged(info);
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch(`/predict?cam=${info && info.cam ? "true" : "false"}`, { method: "POST", body: form });
  const answer = await response.json();
  if (!response.ok) {
    $("label").textContent = "–";
    showError(`${response.status}: ${answer.detail}`);
    return;
  }
  const prediction = answer.predictions[0];
  const multi = Array.isArray(prediction.label);
  $("label").textContent = multi ? (prediction.label.join(", ") || "(no class above the threshold)") : prediction.label;
  $("probability").textContent = multi ? "" : `probability ${(prediction.probability * 100).toFixed(1)}%`;
  drawBars(prediction.top);
  if (prediction.cam) {
    $("cam").src = prediction.cam.png;
    $("cam").alt = `Grad-CAM of ${prediction.cam.class}`;
    $("cam").hidden = !$("cam-toggle").checked;
  }
}

function pick(files) {
  if (files && files.length) classify(files[0]).catch((error) => showError(String(error)));
}

$("file").addEventListener("change", (event) => pick(event.target.files));
$("cam-toggle").addEventListener("change", () => { $("cam").hidden = !$("cam-toggle").checked || !$("cam").src; });
const drop = $("drop");
["dragenter", "dragover"].forEach((kind) => drop.addEventListener(kind, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((kind) => drop.addEventListener(kind, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => { event.preventDefault(); pick(event.dataTransfer.files); });
loadInfo().catch((error) => showError(`cannot read /info: ${error}`));

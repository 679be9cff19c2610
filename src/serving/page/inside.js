// "Inside the model": the photo followed through the served network, from POST /predict?inside=true.
// The server sends the input's uint8 pixels, the first layer's weights and one output channel as
// base64 arrays; the receptive field and its multiply-and-add are computed here, for any position,
// and set beside the value the model's own feature map holds there.
// Plain browser JavaScript, no build step; uses $, info and photo from page.js. Everything else stays
// inside this function (page.js's names, such as drawBars, are its own); window gets insideMath for the
// tests and insidePhotoChanged for page.js.
(() => {
"use strict";

let inside = null;  // the last answer's "inside" part
let stageShown = null;
const SHOWN_SCALE = 4;  // CSS pixels per input pixel for small inputs (the canvas scales down large ones)

// --- the arithmetic, exposed for the tests (window.insideMath) ---
const f32 = Math.fround;

function decodeBytes(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function decodeFloats(base64) {
  return new Float32Array(decodeBytes(base64).buffer);
}

// torchvision's ToDtype(float32, scale=True) then Normalize, in float32 as torch computes them:
// x = u8 * (1/255), then (x - mean) / std, each step rounded to float32.
function normalise(pixels, shape, mean, std) {
  const [channels, height, width] = shape;
  const out = new Float32Array(pixels.length);
  const scale = f32(1 / 255);
  for (let c = 0; c < channels; c += 1) {
    const m = f32(mean[c]);
    const s = f32(std[c]);
    for (let i = c * height * width; i < (c + 1) * height * width; i += 1) {
      out[i] = f32(f32(f32(pixels[i] * scale) - m) / s);
    }
  }
  return out;
}

// The receptive field of output (row, col) of one kernel (C x k x k, flat) over a C x H x W input (flat),
// zero outside the image (the padding), and the multiply-and-add: one partial sum per input channel.
function multiplyAdd(input, shape, weights, kernelShape, stride, padding, row, col) {
  const [channels, height, width] = shape;
  const [, kh, kw] = kernelShape;
  const top = row * stride[0] - padding[0];
  const left = col * stride[1] - padding[1];
  const patch = new Float64Array(channels * kh * kw);
  const perChannel = [];
  for (let c = 0; c < channels; c += 1) {
    let sum = 0;
    for (let i = 0; i < kh; i += 1) {
      for (let j = 0; j < kw; j += 1) {
        const y = top + i;
        const x = left + j;
        const value = y >= 0 && y < height && x >= 0 && x < width ? input[(c * height + y) * width + x] : 0;
        patch[(c * kh + i) * kw + j] = value;
        sum += weights[(c * kh + i) * kw + j] * value;
      }
    }
    perChannel.push(sum);
  }
  return { top, left, patch, perChannel, total: perChannel.reduce((a, b) => a + b, 0) };
}

window.insideMath = { decodeBytes, decodeFloats, normalise, multiplyAdd };

// --- drawing helpers ---
function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function el(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
  if (text) node.textContent = text;
  return node;
}

function sizeCanvas(canvas, width, height, scale) {
  canvas.width = width;
  canvas.height = height;
  canvas.style.width = `${Math.min(width * scale, 300)}px`;
}

// a C x H x W uint8 picture (flat) on a canvas: RGB, or one channel in grey
function drawPixels(canvas, pixels, shape, channel = null) {
  const [, height, width] = shape;
  sizeCanvas(canvas, width, height, SHOWN_SCALE);
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < height * width; i += 1) {
    for (let c = 0; c < 3; c += 1) image.data[4 * i + c] = pixels[(channel === null ? c : channel) * height * width + i];
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

function diverging(value, limit) {  // blue (negative) - white - red (positive)
  const t = Math.max(-1, Math.min(1, value / (limit || 1)));
  const fade = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
}

function image(src, alt, size) {
  const node = el("img", { src, alt, class: "map" });
  node.style.width = `${size}px`;
  node.style.height = `${size}px`;
  return node;
}

// --- 1. the input ---
function drawInput() {
  const part = inside.input;
  const pixels = decodeBytes(part.pixels);
  drawPixels($("input-picture"), pixels, part.shape);
  document.querySelectorAll(".input-channel").forEach((canvas, c) => drawPixels(canvas, pixels, part.shape, c));
  const [c, h, w] = part.shape;
  $("input-text").textContent = `A ${c} × ${h} × ${w} tensor: the photo resized and centre-cropped ` +
    `(${part.steps.slice(0, -2).join(", ")}), its 0-255 values scaled to 0-1, then normalised per channel: ` +
    `(x − mean) / std with mean [${part.mean.map((v) => fmt(v))}] and std [${part.std.map((v) => fmt(v))}] ` +
    "(the statistics of the data the weights were trained on), so each channel is centred near 0.";
  const table = $("input-stats");
  table.replaceChildren();
  const head = el("tr");
  ["channel", "before: mean", "std", "min", "max", "after: mean", "std", "min", "max"].forEach((t) => head.append(el("th", {}, t)));
  table.append(head);
  part.channels.forEach((channel) => {
    const row = el("tr");
    row.append(el("th", {}, channel.name));
    ["before", "after"].forEach((when) => ["mean", "std", "min", "max"].forEach((key) => row.append(el("td", {}, fmt(channel[when][key])))));
    table.append(row);
  });
}

// --- 2. a kernel at work ---
function kernelState() {
  const part = inside.kernel;
  if (!part.cache) {
    const shape = inside.input.shape;
    part.cache = {
      input: normalise(decodeBytes(inside.input.pixels), shape, inside.input.mean, inside.input.std),
      weights: decodeFloats(part.weights),
      output: decodeFloats(part.output.values),
    };
  }
  return part.cache;
}

function drawKernelChoice() {
  const part = inside.kernel;
  const select = $("kernel");
  if (select.options.length !== part.count) {
    select.replaceChildren(...Array.from({ length: part.count }, (_, i) => el("option", { value: String(i) }, `${i}`)));
  }
  select.value = String(part.index);
  const [outH, outW] = part.output.shape;
  $("pos-row").max = String(outH - 1);
  $("pos-col").max = String(outW - 1);
  // a new photo starts at the centre; a position the new output does not have, too
  if ($("pos-row").value === "" || Number($("pos-row").value) > outH - 1) $("pos-row").value = String(Math.floor(outH / 2));
  if ($("pos-col").value === "" || Number($("pos-col").value) > outW - 1) $("pos-col").value = String(Math.floor(outW / 2));
  const [, kh, kw] = part.shape;
  const [h, w] = inside.input.shape.slice(1);
  $("kernel-text").textContent = `The first layer (${part.layer}) has ${part.count} kernels of ` +
    `${part.shape.join(" × ")} weights. Each slides over the normalised input with stride ${part.stride[0]} ` +
    `and padding ${part.padding[0]} (zeros around the image): at every output position it multiplies the ` +
    `${part.shape.join(" × ")} numbers under it by its weights and adds them up, one number. ` +
    `So ${h} × ${w} becomes ⌊(${h} + 2·${part.padding[0]} − ${kh}) / ${part.stride[0]}⌋ + 1 = ${outH} rows ` +
    `and ⌊(${w} + 2·${part.padding[1]} − ${kw}) / ${part.stride[1]}⌋ + 1 = ${outW} columns, and the ` +
    `${part.count} kernels give ${part.count} channels.`;
}

function drawWeights(weights, shape) {
  const [channels, kh, kw] = shape;
  const cell = 8;
  const canvas = $("kernel-weights");
  sizeCanvas(canvas, channels * (kw * cell + cell) - cell, kh * cell, 1.5);
  const context = canvas.getContext("2d");
  const limit = Math.max(...weights.map(Math.abs));
  for (let c = 0; c < channels; c += 1) {
    for (let i = 0; i < kh; i += 1) {
      for (let j = 0; j < kw; j += 1) {
        const [r, g, b] = diverging(weights[(c * kh + i) * kw + j], limit);
        context.fillStyle = `rgb(${r},${g},${b})`;
        context.fillRect(c * (kw * cell + cell) + j * cell, i * cell, cell, cell);
      }
    }
  }
  $("weights-caption").textContent = `kernel ${inside.kernel.index}: ${shape.join(" × ")} weights, one 7 × 7 grid per ` +
    "input channel (R, G, B; red positive, blue negative)";
}

function drawField(result) {
  const part = inside.kernel;
  const [, h, w] = inside.input.shape;
  const [pad] = part.padding;
  const [, kh, kw] = part.shape;
  const scale = Math.max(1, Math.floor(240 / (w + 2 * pad)));
  const canvas = $("field-picture");
  canvas.width = (w + 2 * pad) * scale;
  canvas.height = (h + 2 * pad) * scale;
  canvas.style.width = `${Math.min(canvas.width, 300)}px`;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.fillStyle = "#9aa";  // the padding: zeros
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage($("input-picture"), pad * scale, pad * scale, w * scale, h * scale);
  context.strokeStyle = "#ff2d55";
  context.lineWidth = Math.max(2, scale / 2);
  context.strokeRect((result.left + pad) * scale, (result.top + pad) * scale, kw * scale, kh * scale);
  $("field-caption").textContent = `rows ${result.top}…${result.top + kh - 1}, columns ${result.left}…` +
    `${result.left + kw - 1} of the input (negative or past ${h - 1}: the padding, grey); tap to move it`;
}

function drawOutput(row, col) {
  const part = inside.kernel;
  const { output } = kernelState();
  const [outH, outW] = part.output.shape;
  const canvas = $("kernel-output");
  const scale = Math.max(1, Math.floor(240 / outW));
  canvas.width = outW * scale;
  canvas.height = outH * scale;
  canvas.style.width = `${Math.min(canvas.width, 300)}px`;
  const context = canvas.getContext("2d");
  const low = Math.min(...output);
  const high = Math.max(...output);
  const picture = context.createImageData(outW, outH);
  for (let i = 0; i < output.length; i += 1) {
    const v = high > low ? Math.round(255 * (output[i] - low) / (high - low)) : 0;
    picture.data.set([v, v, v, 255], 4 * i);
  }
  const small = document.createElement("canvas");
  small.width = outW;
  small.height = outH;
  small.getContext("2d").putImageData(picture, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(small, 0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#ff2d55";
  context.lineWidth = 2;
  context.strokeRect(col * scale - 1, row * scale - 1, scale + 2, scale + 2);
  $("output-caption").textContent = `channel ${part.index} of ${part.layer}'s output: ${outH} × ${outW}, ` +
    `min ${fmt(low)}, max ${fmt(high)} (before BatchNorm and ReLU); the square is (${row}, ${col})`;
}

function numberGrid(values, size) {
  const grid = el("div", { class: "numbers" });
  grid.style.gridTemplateColumns = `repeat(${size}, auto)`;
  values.forEach((v) => grid.append(el("span", {}, fmt(v, 2))));
  return grid;
}

function drawKernelAt() {
  const part = inside.kernel;
  const state = kernelState();
  const [outH, outW] = part.output.shape;
  const row = Math.max(0, Math.min(outH - 1, Math.round(Number($("pos-row").value) || 0)));
  const col = Math.max(0, Math.min(outW - 1, Math.round(Number($("pos-col").value) || 0)));
  $("pos-row").value = String(row);
  $("pos-col").value = String(col);
  const size = part.shape[0] * part.shape[1] * part.shape[2];
  const weights = Array.from(state.weights.subarray(part.index * size, (part.index + 1) * size));
  const result = multiplyAdd(state.input, inside.input.shape, weights, part.shape, part.stride, part.padding, row, col);
  drawWeights(weights, part.shape);
  drawField(result);
  drawOutput(row, col);
  const [channels, kh, kw] = part.shape;
  const table = $("mac-table");
  table.replaceChildren();
  const header = el("tr");
  ["", "weights", "× inputs under them (normalised)", "= sum"].forEach((t) => header.append(el("th", {}, t)));
  table.append(header);
  for (let c = 0; c < channels; c += 1) {
    const line = el("tr");
    line.append(el("th", {}, ["R", "G", "B"][c] || `${c}`));
    const w = el("td", { class: "grid" });
    w.append(numberGrid(weights.slice(c * kh * kw, (c + 1) * kh * kw), kw));
    const x = el("td", { class: "grid" });
    x.append(numberGrid(Array.from(result.patch.subarray(c * kh * kw, (c + 1) * kh * kw)), kw));
    line.append(w, x, el("td", {}, fmt(result.perChannel[c], 4)));
    table.append(line);
  }
  const bias = part.bias ? part.bias[part.index] : 0;
  const total = result.total + bias;
  const model = state.output[row * outW + col];
  $("mac-sum").textContent = `${result.perChannel.map((v) => fmt(v, 4)).join(" + ")}` +
    (part.bias ? ` + bias ${fmt(bias, 4)}` : " (no bias)") + ` = ${fmt(total, 4)}`;
  $("mac-total").textContent = fmt(total, 4);
  $("mac-model").textContent = fmt(model, 4);
  const close = Math.abs(total - model) <= 1e-3 * Math.max(1, Math.abs(model));
  $("mac-check").textContent = close ? "✓ the same number" :
    `(differs by ${fmt(Math.abs(total - model), 4)}: the model runs at ${info.precision}, this sum in float64)`;
  $("mac-check").className = close ? "ok" : "off";
}

function drawHandmade() {
  $("handmade").replaceChildren(...inside.handmade.map((kernel) => {
    const figure = el("figure");
    figure.append(image(kernel.png, kernel.name, 110));
    figure.append(el("figcaption", {}, `${kernel.name}: 3 × 3 ${JSON.stringify(kernel.kernel.map((r) => r.map((v) => Number(v.toFixed(2)))))} ` +
      "on each of R, G, B (0-1), summed, stride 1, padding 1"));
    return figure;
  }));
}

// --- 3. stage by stage ---
function stepText(step) {
  const [, inH] = step.in;
  const [, outH] = step.out;
  if (step.kernel === undefined) return `${step.module} (${step.type}): ${inH} → ${outH}`;
  const dilation = step.dilation > 1 ? `${step.dilation}·(${step.kernel} − 1) − 1` : `${step.kernel}`;
  return `${step.module} (${step.type} ${step.kernel} × ${step.kernel}, stride ${step.stride}, padding ${step.padding}): ` +
    `⌊(${inH} + 2·${step.padding} − ${dilation}) / ${step.stride}⌋ + 1 = ${outH}` +
    (step.checked ? "" : " (the layer's own output differs: see its type)");
}

function drawStage(name) {
  stageShown = name;
  const stage = inside.stages.find((s) => s.name === name);
  document.querySelectorAll("#stage-tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.stage === name)));
  const [c, h, w] = stage.shape;
  $("stage-shape").textContent = `${name}: ${c} × ${h} × ${w}`;
  $("stage-steps").replaceChildren(...(stage.steps.length ? stage.steps.map((s) => el("li", {}, stepText(s)))
    : [el("li", {}, `every layer has stride 1 (and enough padding): ${h} × ${w} stays, the channels become ${c}`)]));
  $("stage-params").textContent = `${stage.params.toLocaleString("en")} parameters in ${stage.layers} layers, ` +
    `${stage.trainable.toLocaleString("en")} trainable in the schedule's stage`;
  const size = Math.max(48, Math.min(120, 8 * w));
  const maps = [el("figure")];
  maps[0].append(image(stage.mean_png, "mean of all channels", size), el("figcaption", {}, `mean of the ${c} channels`));
  stage.channels.forEach((ch) => {
    const figure = el("figure");
    figure.append(image(ch.png, `channel ${ch.index}`, size), el("figcaption", {}, `channel ${ch.index} (mean ${fmt(ch.mean, 2)})`));
    maps.push(figure);
  });
  $("stage-maps").replaceChildren(...maps);
}

function drawStages() {
  $("stages-error").hidden = !inside.stages_error;
  $("stages-error").textContent = inside.stages_error || "";
  $("stage-detail").hidden = !inside.stages;
  $("state-text").textContent = inside.state;
  if (!inside.stages) {
    $("stage-tabs").replaceChildren();
    $("stage-table").replaceChildren();
    return;
  }
  $("stage-tabs").replaceChildren(...inside.stages.map((stage) => {
    const button = el("button", { type: "button", role: "tab", "data-stage": stage.name }, stage.name);
    button.addEventListener("click", () => drawStage(stage.name));
    return button;
  }));
  const table = $("stage-table");
  table.replaceChildren();
  const head = el("tr");
  ["stage", "output (C × H × W)", "parameters", "trainable now"].forEach((t) => head.append(el("th", {}, t)));
  table.append(head);
  [{ name: "input", shape: inside.input.shape }, ...inside.stages].forEach((stage) => {
    const row = el("tr");
    row.append(el("th", {}, stage.name), el("td", {}, stage.shape.join(" × ")),
      el("td", {}, stage.params === undefined ? "" : stage.params.toLocaleString("en")),
      el("td", {}, stage.trainable === undefined ? "" : stage.trainable.toLocaleString("en")));
    table.append(row);
  });
  const names = inside.stages.map((s) => s.name);
  drawStage(names.includes(stageShown) ? stageShown : names[0]);
}

// --- 4. pooling and the head ---
function drawPoolBars(canvas, values, colour) {
  const width = Math.max(values.length, 300);
  canvas.width = width;
  canvas.height = 90;
  const context = canvas.getContext("2d");
  const high = Math.max(...values, 0);
  const low = Math.min(...values, 0);
  const zero = high > low ? 90 * high / (high - low) : 90;
  context.fillStyle = colour;
  const step = width / values.length;
  values.forEach((v, i) => {
    const y = high > low ? 90 * (high - v) / (high - low) : zero;
    context.fillRect(i * step, Math.min(y, zero), Math.max(step, 1), Math.abs(zero - y));
  });
}

function drawHead() {
  const pool = inside.pooling;
  const [c, h, w] = pool.feature_shape;
  const averages = decodeFloats(pool.avg);
  $("pool-text").textContent = `The last stage's ${c} × ${h} × ${w} map becomes one vector: ` +
    (pool.kind === "concat" ? `each channel's maximum and its average over the ${h} × ${w} positions (fastai's ` +
      `concat pooling), ${c} maxima then ${c} averages: ${pool.length} numbers, whatever the photo's size.`
      : `each channel's average (${pool.kind}): ${pool.length} numbers.`);
  $("pool-max").parentElement.hidden = !pool.max;
  if (pool.max) {
    drawPoolBars($("pool-max"), Array.from(decodeFloats(pool.max)), "#1b9e5a");
    $("pool-max-caption").textContent = `${c} maxima (first half of the ${pool.length}-vector)`;
  }
  drawPoolBars($("pool-avg"), Array.from(averages), "#2f6fde");
  $("pool-avg-caption").textContent = `${c} averages` + (pool.max ? ` (second half)` : "");
  const table = $("head-table");
  table.replaceChildren();
  const header = el("tr");
  ["head layer", "", "output", "parameters", "trainable now"].forEach((t) => header.append(el("th", {}, t)));
  table.append(header);
  inside.head.layers.forEach((layer) => {
    const row = el("tr");
    const text = el("td", {}, layer.text.length > 60 ? layer.type : layer.text);
    text.style.textAlign = "left";
    row.append(el("th", {}, layer.name), text, el("td", {}, layer.out.join(" × ")),
      el("td", {}, layer.params.toLocaleString("en")), el("td", {}, layer.trainable.toLocaleString("en")));
    table.append(row);
  });
  $("head-text").textContent = inside.head.affine
    ? "After pooling the head is linear (BatchNorm, Dropout and Linear in eval mode): each class score is " +
      "Σ weight × value over the vector, plus a bias. The contributions below are those products."
    : "The head has a ReLU between its Linear layers, so it is linear only where each ReLU stays on or off: " +
      "there each class score is Σ gradient × value plus that region's bias. The contributions below are " +
      "gradient × value (for a linear head, exactly weight × value).";
  $("class-parts").replaceChildren(...inside.classes.map((part) => {
    const block = el("div", { class: "class-part" });
    block.append(el("h4", {}, `${part.label}: probability ${fmt(part.probability * 100, 1)}%, score ${fmt(part.logit, 3)}`));
    block.append(el("p", { class: "class-sum" },
      `Σ contributions ${fmt(part.sum, 3)} + bias ${fmt(part.bias, 3)} = score ${fmt(part.sum + part.bias, 3)}`));
    const row = el("div", { class: "pictures" });
    const pair = el("div", { class: "cam-pair" });
    const base = document.createElement("canvas");
    pair.append(base, el("img", { src: part.cam, alt: `Grad-CAM of ${part.label}` }));
    drawPixels(base, decodeBytes(inside.input.pixels), inside.input.shape);
    base.style.width = "100%";
    const cam = el("figure");
    cam.append(pair, el("figcaption", {}, `Grad-CAM at ${inside.cam_layer}: where ${part.label}'s score comes from`));
    row.append(cam);
    const table = el("table");
    const head = el("tr");
    ["channel", "map", pool.max ? "max × w" : "", "avg × w", "together"].forEach((t) => head.append(el("th", {}, t)));
    table.append(head);
    part.contributions.forEach((item) => {
      const line = el("tr");
      const map = el("td");
      map.append(image(item.png, `channel ${item.channel}`, 28));
      line.append(el("th", {}, `${item.channel}`), map, el("td", {}, pool.max ? fmt(item.max, 3) : ""),
        el("td", {}, fmt(item.avg, 3)), el("td", {}, fmt(item.total, 3)));
      table.append(line);
    });
    const scroll = el("div", { class: "scroll" });
    scroll.append(table);
    row.append(scroll);
    block.append(row);
    return block;
  }));
}

function drawInside() {
  $("inside-body").hidden = false;
  drawInput();
  if (inside.kernel) {
    $("part-kernel").hidden = false;
    drawKernelChoice();
    drawKernelAt();
  } else {  // a body without a convolution: say so instead of the kernel
    $("part-kernel").hidden = false;
    $("kernel-text").textContent = inside.kernel_error;
    ["mac-table", "handmade"].forEach((id) => $(id).replaceChildren());
  }
  drawHandmade();
  drawStages();
  drawHead();
}

async function lookInside(kernel = null) {
  if (!photo) return;
  $("inside").hidden = false;
  $("inside-error").hidden = true;
  $("inside-status").textContent = "following the photo through the network…";
  const form = new FormData();
  form.append("file", photo, photo.name);
  const query = kernel === null ? "" : `&kernel=${kernel}`;
  const started = performance.now();
  const response = await fetch(`/predict?inside=true${query}`, { method: "POST", body: form });
  const answer = await response.json();
  if (!response.ok) {
    $("inside-status").textContent = "";
    $("inside-error").textContent = `${response.status}: ${answer.detail}`;
    $("inside-error").hidden = false;
    $("inside-body").hidden = true;
    return;
  }
  inside = answer.predictions[0].inside;
  drawInside();
  $("inside-status").textContent = `${info.name} at ${info.precision}: one forward pass with hooks ` +
    `(${Math.round(performance.now() - started)} ms with the upload)`;
}

window.insidePhotoChanged = (model) => {
  $("inside-open").hidden = !(model && model.inside);
  const open = !$("inside").hidden;
  inside = null;
  $("pos-row").value = "";
  $("pos-col").value = "";
  if (open) lookInside().catch(failed);  // the view was open: follow the new photo
};

function failed(error) {
  $("inside-error").textContent = String(error);
  $("inside-error").hidden = false;
}

$("inside-open").addEventListener("click", () => lookInside().catch(failed));
$("kernel").addEventListener("change", () => lookInside(Number($("kernel").value)).catch(failed));
["pos-row", "pos-col"].forEach((id) => $(id).addEventListener("input", () => { if (inside) drawKernelAt(); }));
$("field-picture").addEventListener("click", (event) => {
  if (!inside) return;
  const part = inside.kernel;
  const canvas = $("field-picture");
  const rect = canvas.getBoundingClientRect();
  const scale = canvas.width / rect.width;
  const unit = canvas.width / (inside.input.shape[2] + 2 * part.padding[1]);
  // the image pixel under the tap, then the output position whose field is centred nearest to it
  const y = ((event.clientY - rect.top) * scale) / unit - part.padding[0];
  const x = ((event.clientX - rect.left) * scale) / unit - part.padding[1];
  $("pos-row").value = String(Math.round((y + part.padding[0] - (part.shape[1] - 1) / 2) / part.stride[0]));
  $("pos-col").value = String(Math.round((x + part.padding[1] - (part.shape[2] - 1) / 2) / part.stride[1]));
  drawKernelAt();
});
$("kernel-output").addEventListener("click", (event) => {
  if (!inside) return;
  const rect = $("kernel-output").getBoundingClientRect();
  const [outH, outW] = inside.kernel.output.shape;
  $("pos-row").value = String(Math.floor(((event.clientY - rect.top) / rect.height) * outH));
  $("pos-col").value = String(Math.floor(((event.clientX - rect.left) / rect.width) * outW));
  drawKernelAt();
});
})();

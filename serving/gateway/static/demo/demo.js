// Demo page: vanilla JS, no dependencies. It only calls the gateway's public API
// (POST /predict, POST /predict/housing) plus the read-only GET /demo/samples helper.
"use strict";

(() => {
  const page = document.body.dataset;
  const $ = (selector) => document.querySelector(selector);

  // ------------------------------------------------------------------ gateway API

  class GatewayError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // fetch + JSON; a non-2xx answer becomes a GatewayError carrying the gateway's own message.
  async function callGateway(url, init) {
    const key = $("#api-key").value.trim();
    const headers = new Headers(init.headers || {});
    if (key) headers.set("X-API-Key", key);
    let response;
    try {
      response = await fetch(url, { ...init, headers });
    } catch (err) {
      throw new GatewayError(`cannot reach the gateway (${err.message})`, 0, "network");
    }
    let data = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try {
        data = await response.json();
      } catch (_err) {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && data.error;
      const message = error && error.message
        ? error.message
        : `HTTP ${response.status} ${response.statusText}`.trim();
      throw new GatewayError(message, response.status, error && error.code);
    }
    if (data === null || typeof data !== "object") {
      throw new GatewayError("the gateway's answer is not JSON", response.status, "bad_response");
    }
    return data;
  }

  // An image file (upload, drawing or sample PNG) goes to the gateway as it is: the gateway
  // does the one conversion to 28x28 and sends back the image the model saw (return_image).
  // top_k=10 names every class, for the chart.
  function predictImage(blob, filename, invert) {
    const form = new FormData();
    form.append("image", blob, filename);
    form.append("invert", invert);
    const url = `${page.predictUrl}?top_k=10&return_image=true`;
    return callGateway(url, { method: "POST", body: form });
  }

  function predictHousing(row) {
    return callGateway(page.housingUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ instances: [row] }),
    });
  }

  // ------------------------------------------------------------------ image helpers

  function base64ToBlob(b64, type) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Blob([bytes], { type });
  }

  // Decoding through createImageBitmap keeps the CSP strict: no data: or blob: image URLs.
  async function paintBlob(canvas, blob) {
    const bitmap = await createImageBitmap(blob);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
  }

  // ------------------------------------------------------------------ classifier result

  const result = {
    error: $("#fashion-error"),
    empty: $("#fashion-empty"),
    box: $("#fashion-result"),
    seen: $("#seen-canvas"),
    prediction: $("#prediction"),
    confidence: $("#confidence"),
    truth: $("#truth"),
    version: $("#model-version"),
    bars: $("#bars"),
  };
  let requestSerial = 0; // only the newest request may paint the result

  function showError(box, message) {
    box.textContent = message;
    box.classList.remove("hidden");
  }

  function hideError(box) {
    box.textContent = "";
    box.classList.add("hidden");
  }

  function percent(p) {
    return `${(100 * p).toFixed(1)}%`;
  }

  async function classify(blob, filename, invert, truth) {
    const serial = ++requestSerial;
    document.body.dataset.fashionState = "busy";
    try {
      const answer = await predictImage(blob, filename, invert);
      if (serial !== requestSerial) return;
      await showPrediction(answer, truth);
      hideError(result.error);
      document.body.dataset.fashionState = "done";
    } catch (err) {
      if (serial !== requestSerial) return;
      showError(result.error, err.message);
      document.body.dataset.fashionState = "error";
    }
  }

  async function showPrediction(answer, truth) {
    const prediction = answer.predictions && answer.predictions[0];
    if (!prediction || !Array.isArray(prediction.probabilities)) {
      throw new GatewayError("the gateway's answer has no prediction", 200, "bad_response");
    }
    const names = [];
    for (const entry of prediction.top_k || []) names[entry.class_id] = entry.class_name;
    const probabilities = prediction.probabilities;
    const top = prediction.class_id;
    result.prediction.textContent = prediction.class_name;
    result.prediction.dataset.classId = String(top);
    result.confidence.textContent = `confidence ${percent(probabilities[top])}`;
    if (truth) {
      const match = truth.id === top;
      result.truth.textContent = `true label: ${truth.name} ${match ? "(correct)" : "(wrong)"}`;
      result.truth.className = match ? "match" : "mismatch";
    } else {
      result.truth.textContent = "";
      result.truth.className = "";
    }
    result.version.textContent = `${answer.model} version ${answer.version}`;
    renderBars(probabilities, names, top);
    if (prediction.image_png) {
      await paintBlob(result.seen, base64ToBlob(prediction.image_png, "image/png"));
    }
    result.empty.classList.add("hidden");
    result.box.classList.remove("hidden");
  }

  function renderBars(probabilities, names, top) {
    const rows = probabilities.map((p, i) => {
      const row = document.createElement("div");
      row.className = i === top ? "bar-row top" : "bar-row";
      row.dataset.classId = String(i);
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = names[i] || `class ${i}`;
      const track = document.createElement("div");
      track.className = "bar-track";
      const fill = document.createElement("div");
      fill.className = "bar-fill";
      fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`; // CSSOM: allowed by the CSP
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = percent(p);
      row.append(label, track, value);
      return row;
    });
    result.bars.replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ drawing

  const drawCanvas = $("#draw-canvas");
  const draw = drawCanvas.getContext("2d", { willReadFrequently: true });
  const brush = $("#draw-brush");
  let pen = null; // last point while the pointer is down

  function clearDrawing() {
    draw.fillStyle = "#000";
    draw.fillRect(0, 0, drawCanvas.width, drawCanvas.height);
  }

  function canvasPoint(event) {
    const rect = drawCanvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * drawCanvas.width) / rect.width,
      y: ((event.clientY - rect.top) * drawCanvas.height) / rect.height,
    };
  }

  // A white round brush with a blurred edge: after the 10x downscale it gives the soft,
  // grey-edged strokes of Fashion-MNIST rather than hard binary pixels.
  function strokeTo(from, to) {
    const width = Number(brush.value);
    draw.save();
    draw.strokeStyle = "#fff";
    draw.lineWidth = width;
    draw.lineCap = "round";
    draw.lineJoin = "round";
    draw.shadowColor = "rgba(255, 255, 255, 0.85)";
    draw.shadowBlur = width * 0.5;
    draw.beginPath();
    draw.moveTo(from.x, from.y);
    draw.lineTo(to.x, to.y);
    draw.stroke();
    draw.restore();
  }

  drawCanvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    drawCanvas.setPointerCapture(event.pointerId);
    pen = canvasPoint(event);
    strokeTo(pen, pen);
  });
  drawCanvas.addEventListener("pointermove", (event) => {
    if (!pen) return;
    const point = canvasPoint(event);
    strokeTo(pen, point);
    pen = point;
  });
  const endStroke = () => {
    if (!pen) return;
    pen = null;
    sendDrawing();
  };
  drawCanvas.addEventListener("pointerup", endStroke);
  drawCanvas.addEventListener("pointercancel", endStroke);
  $("#draw-clear").addEventListener("click", clearDrawing);

  // Fashion-MNIST items fill their frame, so the drawing is cropped to its ink (plus a small
  // margin) before it is sent; the gateway then scales it to 28x28 like any other image.
  function inkBox() {
    const { width, height } = drawCanvas;
    const pixels = draw.getImageData(0, 0, width, height).data;
    let left = width;
    let right = -1;
    let top = height;
    let bottom = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (pixels[(y * width + x) * 4] > 16) {
          if (x < left) left = x;
          if (x > right) right = x;
          if (y < top) top = y;
          if (y > bottom) bottom = y;
        }
      }
    }
    return right < 0 ? null : { left, top, width: right - left + 1, height: bottom - top + 1 };
  }

  function sendDrawing() {
    const box = inkBox();
    if (!box) return;
    const side = Math.round(Math.max(box.width, box.height) * 1.08);
    const crop = document.createElement("canvas");
    crop.width = side;
    crop.height = side;
    const ctx = crop.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, side, side);
    ctx.drawImage(
      drawCanvas, box.left, box.top, box.width, box.height,
      Math.round((side - box.width) / 2), Math.round((side - box.height) / 2), box.width, box.height,
    );
    crop.toBlob((blob) => {
      if (blob) classify(blob, "drawing.png", "never", null);
    }, "image/png");
  }

  // ------------------------------------------------------------------ upload

  const fileInput = $("#file-input");
  const dropzone = $("#dropzone");
  const invertSelect = $("#invert");
  let lastFile = null;

  function sendFile(file) {
    lastFile = file;
    classify(file, file.name || "upload", invertSelect.value, null);
  }

  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) sendFile(fileInput.files[0]);
  });
  invertSelect.addEventListener("change", () => {
    if (lastFile) sendFile(lastFile);
  });
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropzone.addEventListener(type, () => dropzone.classList.remove("over"));
  }
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) sendFile(file);
  });

  // ------------------------------------------------------------------ test-set samples

  const samplesBox = $("#samples");
  const samplesStatus = $("#samples-status");

  async function loadSamples() {
    samplesStatus.textContent = "loading...";
    let answer;
    try {
      answer = await callGateway(`${page.samplesUrl}?count=8`, { method: "GET" });
    } catch (err) {
      // 404 means the test set is not installed next to the gateway: hide the section.
      if (err.status === 404) {
        $("#samples-box").classList.add("hidden");
      } else {
        samplesStatus.textContent = err.message;
      }
      return;
    }
    const buttons = await Promise.all(answer.samples.map(sampleButton));
    samplesBox.replaceChildren(...buttons);
    samplesStatus.textContent = `test images ${answer.samples.map((s) => s.index).join(", ")}`;
  }

  async function sampleButton(sample) {
    const blob = base64ToBlob(sample.image_png, "image/png");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.index = String(sample.index);
    button.dataset.label = String(sample.label);
    button.title = `test image ${sample.index}: ${sample.class_name}`;
    const canvas = document.createElement("canvas");
    canvas.width = 28;
    canvas.height = 28;
    await paintBlob(canvas, blob);
    const caption = document.createElement("span");
    caption.textContent = sample.class_name;
    button.append(canvas, caption);
    button.addEventListener("click", () => {
      for (const other of samplesBox.querySelectorAll(".sample.active")) {
        other.classList.remove("active");
      }
      button.classList.add("active");
      // The PNG is the exact 28x28 test image: "never" keeps the gateway from inverting it.
      classify(blob, `test-${sample.index}.png`, "never", {
        id: sample.label,
        name: sample.class_name,
      });
    });
    return button;
  }

  $("#samples-more").addEventListener("click", loadSamples);

  // ------------------------------------------------------------------ housing

  const housingForm = $("#housing-form");
  const housingValue = $("#housing-value");
  const housingError = $("#housing-error");

  // Values go to the gateway as typed (numbers when they parse, else null) so that the
  // gateway, not the page, decides what is acceptable and says why.
  function housingRow() {
    const row = {};
    for (const input of housingForm.querySelectorAll("input[name]")) {
      const text = input.value.trim();
      row[input.name] = text === "" || !Number.isFinite(Number(text)) ? null : Number(text);
    }
    return row;
  }

  housingForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    document.body.dataset.housingState = "busy";
    try {
      const answer = await predictHousing(housingRow());
      const value = Number(answer.predictions[0].main);
      housingValue.textContent = `$${Math.round(value * 100000).toLocaleString("en-US")}`;
      housingValue.title = `${value.toFixed(4)} (${answer.target || "x $100k"}), ` +
        `${answer.model} version ${answer.version}`;
      housingValue.dataset.value = String(value);
      hideError(housingError);
      document.body.dataset.housingState = "done";
    } catch (err) {
      housingValue.textContent = "";
      showError(housingError, err.message);
      document.body.dataset.housingState = "error";
    }
  });

  // ------------------------------------------------------------------ start

  clearDrawing();
  loadSamples();
})();

// The pages the mails link to: they call roster's AuthService over gRPC-Web on the same origin.
// No framework and no third-party request; the protobuf messages are a few string fields, encoded
// and decoded here.
"use strict";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ------------------------------------------------------------------------------ protobuf

function varint(value) {
  const out = [];
  while (value > 127) {
    out.push((value & 127) | 128);
    value >>>= 7;
  }
  out.push(value);
  return out;
}

// A message of string fields: [[number, value], ...]; empty strings are left out, as proto3 does.
function encodeStrings(fields) {
  const out = [];
  for (const [number, value] of fields) {
    if (!value) continue;
    const bytes = encoder.encode(value);
    out.push((number << 3) | 2, ...varint(bytes.length), ...bytes);
  }
  return Uint8Array.from(out);
}

// The fields of a message: [[number, value]], value a number (varint) or bytes (length-delimited).
function decodeFields(bytes) {
  const fields = [];
  let at = 0;
  const readVarint = () => {
    let value = 0;
    let scale = 1;
    let byte;
    do {
      if (at >= bytes.length) throw new Error("truncated message");
      byte = bytes[at++];
      value += (byte & 127) * scale;
      scale *= 128;
    } while (byte & 128);
    return value;
  };
  while (at < bytes.length) {
    const key = readVarint();
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      fields.push([number, readVarint()]);
    } else if (wire === 2) {
      const length = readVarint();
      fields.push([number, bytes.subarray(at, at + length)]);
      at += length;
    } else if (wire === 1) {
      at += 8;
    } else if (wire === 5) {
      at += 4;
    } else {
      throw new Error("unknown wire type " + wire);
    }
  }
  return fields;
}

function text(bytes) {
  return decoder.decode(bytes);
}

function fromBase64(value) {
  const padded = value + "=".repeat((4 - (value.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

// The field violations of a google.rpc.Status's google.rpc.BadRequest detail.
function fieldViolations(statusBytes) {
  const violations = [];
  for (const [number, detail] of decodeFields(statusBytes)) {
    if (number !== 3) continue; // google.rpc.Status.details: Any
    const any = decodeFields(detail);
    const typeUrl = any.filter(([n]) => n === 1).map(([, v]) => text(v))[0] || "";
    if (!typeUrl.endsWith("/google.rpc.BadRequest")) continue;
    for (const [n, value] of any) {
      if (n !== 2) continue;
      for (const [f, violation] of decodeFields(value)) {
        if (f !== 1) continue;
        const parts = Object.fromEntries(decodeFields(violation).map(([k, v]) => [k, text(v)]));
        violations.push({ field: parts[1] || "", description: parts[2] || "" });
      }
    }
  }
  return violations;
}

// ------------------------------------------------------------------------------ gRPC-Web

// Calls roster.v1.AuthService/`method` with `request` (bytes); resolves to
// {code, message, violations, reply} where reply is the answer's bytes.
async function call(method, request) {
  const frame = new Uint8Array(5 + request.length);
  new DataView(frame.buffer).setUint32(1, request.length);
  frame.set(request, 5);
  let response;
  try {
    response = await fetch("/roster.v1.AuthService/" + method, {
      method: "POST",
      headers: {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
      },
      body: frame,
    });
  } catch (error) {
    return { code: 14, message: "roster cannot be reached: " + error.message, violations: [] };
  }
  const trailers = new Map();
  for (const name of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) {
    if (response.headers.has(name)) trailers.set(name, response.headers.get(name));
  }
  const body = new Uint8Array(await response.arrayBuffer());
  let reply = new Uint8Array();
  for (let at = 0; at + 5 <= body.length; ) {
    const flags = body[at];
    const length = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    const payload = body.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    if (flags & 0x80) {
      for (const line of text(payload).split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) trailers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
    } else {
      reply = payload;
    }
  }
  const status = trailers.get("grpc-status");
  const code = status === undefined ? (response.ok ? 2 : 14) : Number(status);
  const message = decodeURIComponent(trailers.get("grpc-message") || "");
  let violations = [];
  if (trailers.has("grpc-status-details-bin")) {
    try {
      violations = fieldViolations(fromBase64(trailers.get("grpc-status-details-bin")));
    } catch (error) {
      violations = [];
    }
  }
  return { code, message, violations, reply };
}

// ------------------------------------------------------------------------------ the pages

const INVALID_ARGUMENT = 3;

function element(id) {
  return document.getElementById(id);
}

function clearErrors() {
  for (const node of document.querySelectorAll("[data-error-for]")) node.textContent = "";
}

// Shows each violation beside its field (the whole page's error when no field shows it).
function showErrors(result) {
  clearErrors();
  const general = [];
  for (const violation of result.violations) {
    const node = document.querySelector(`[data-error-for="${CSS.escape(violation.field)}"]`);
    const words = violation.field === "token" ? "This link is invalid or has already been used." : violation.description;
    if (node && violation.field !== "token" && violation.field !== "") {
      node.textContent = (node.textContent ? node.textContent + " " : "") + capitalize(words);
    } else {
      general.push(capitalize(words));
    }
  }
  if (result.violations.length === 0) general.push(result.message || "Something went wrong (code " + result.code + ").");
  element("error").textContent = general.join(" ");
}

function capitalize(words) {
  return words ? words[0].toUpperCase() + words.slice(1) + (/[.!?]$/.test(words) ? "" : ".") : "";
}

function done(message) {
  clearErrors();
  const status = element("status");
  status.textContent = message;
  status.className = "done";
  const form = element("form");
  if (form) form.hidden = true;
}

function token() {
  return new URLSearchParams(window.location.search).get("token") || "";
}

// Reads the two password inputs; false (and the error shown) when they differ or are empty.
function chosenPassword() {
  clearErrors();
  const password = element("password").value;
  if (!password) {
    element("password-error").textContent = "Choose a password.";
    return null;
  }
  if (password !== element("confirm").value) {
    element("confirm-error").textContent = "The two passwords differ.";
    return null;
  }
  return password;
}

function busy(on) {
  const button = element("submit");
  if (button) button.disabled = on;
}

async function activate() {
  const form = element("form");
  const first = await call("ActivateAccount", encodeStrings([[1, token()]]));
  const needsPassword = (result) =>
    result.code === INVALID_ARGUMENT && result.violations.some((v) => v.field === "password");
  if (first.code === 0) return done("Your account is active. You can log in now.");
  if (!needsPassword(first)) {
    element("status").textContent = "";
    return showErrors(first);
  }
  element("status").textContent = "";
  form.hidden = false;
  element("password").focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = chosenPassword();
    if (password === null) return;
    busy(true);
    const result = await call("ActivateAccount", encodeStrings([[1, token()], [2, password]]));
    busy(false);
    if (result.code === 0) return done("Your account is active. You can log in with your new password now.");
    showErrors(result);
  });
}

async function resetPassword() {
  const form = element("form");
  if (!token()) {
    form.hidden = true;
    return showErrors({ code: INVALID_ARGUMENT, violations: [{ field: "token", description: "" }] });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = chosenPassword();
    if (password === null) return;
    busy(true);
    const result = await call("ResetPasswordWithToken", encodeStrings([[1, token()], [2, password]]));
    busy(false);
    if (result.code === 0) return done("Your password is changed. You can log in with it now.");
    showErrors(result);
  });
}

async function confirmEmail() {
  const result = await call("ConfirmEmail", encodeStrings([[1, token()]]));
  if (result.code === 0) {
    const email = decodeFields(result.reply).filter(([n]) => n === 1).map(([, v]) => text(v))[0] || "";
    return done(`Your address ${email} is confirmed.`);
  }
  element("status").textContent = "";
  showErrors(result);
}

const pages = { activate, "reset-password": resetPassword, "confirm-email": confirmEmail };
const page = pages[document.body.dataset.page];
if (page) page();

// The bench page: live slots and order from the station's event stream, and the scan field. No inline script
// (the Content-Security-Policy allows only this file); no library; nothing fetched from elsewhere.
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;

function text(el, value) {
  if (el && el.textContent !== String(value)) el.textContent = value;
}

function rate(bytesPerS) {
  if (!bytesPerS) return "–";
  return bytesPerS >= 1024 ? (bytesPerS / 1024).toFixed(1) + " KiB/s" : Math.round(bytesPerS) + " B/s";
}

function timeLeft(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  return (s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s") + " left";
}

function renderSlot(slot) {
  const card = document.getElementById("slot-" + slot.name);
  if (!card) return;
  const f = (name) => card.querySelector('[data-f="' + name + '"]');
  card.className = "slot state-" + slot.state + (slot.last_outcome ? " last-" + slot.last_outcome : "");
  text(f("state"), slot.state + (slot.fault ? " " + slot.fault : ""));
  text(f("chf_id"), slot.chf_id || "–");
  text(f("gpf_id"), slot.gpf_id || "–");
  text(f("firmware"), slot.firmware || "–");
  text(f("target"), slot.target || "–");
  const fraction = slot.bytes_total ? slot.bytes_done / slot.bytes_total : 0;
  f("progress").value = fraction;
  text(f("percent"), Math.floor(fraction * 100) + "%");
  text(f("rate"), rate(slot.bytes_per_s));
  text(f("eta"), timeLeft(slot.eta_s));
  text(f("message"), slot.message || "");
  const outcome = f("outcome");
  if (slot.last_outcome) {
    outcome.className = "outcome outcome-" + slot.last_outcome;
    text(outcome, slot.last_icon + " " + slot.last_outcome + " · " + slot.last_chf_id + " · " +
      (slot.last_reason_text || "") + " (" + slot.last_reason + ")");
  } else {
    text(outcome, "");
  }
}

function renderOrder(order) {
  const panel = document.getElementById("order");
  const o = (name) => panel.querySelector('[data-o="' + name + '"]');
  if (!order) {
    text(o("order_ref"), "none open");
    return;
  }
  for (const key of ["order_ref", "asked", "received", "done", "dispatched", "missing"]) text(o(key), order[key]);
  const outcomes = Object.entries(order.outcomes).map(([k, n]) => k + " " + n).join(" · ");
  text(o("outcomes"), outcomes || "no outcomes yet");
  document.getElementById("scan-order").value = order.order_ref;
}

function renderLink(reporting) {
  const dsp = document.getElementById("dsp");
  if (!reporting) {
    text(dsp, "DSP link: not configured ([mqtt])");
    return;
  }
  const broker = reporting.broker && reporting.broker.connected ? "✔ broker connected" : "✖ broker not connected";
  const backlog = reporting.outbox ? reporting.outbox.pending + reporting.outbox.at_broker : 0;
  const bridges = Object.values(reporting.bridges || {}).filter((s) => s === "online").length;
  text(dsp, "DSP link: " + broker + " · outbox backlog " + backlog + " · bridges online " + bridges);
}

function linkState(ok, words) {
  const link = document.getElementById("link");
  link.className = "link " + (ok ? "ok" : "lost");
  link.querySelector(".icon").textContent = ok ? "●" : "✖";
  text(document.getElementById("link-text"), words);
  document.body.classList.toggle("lost", !ok);
}

// After the stream is refused (not merely cut), the browser gives it up: ask whether this page is still signed in.
// A station that restarted has forgotten its sessions, and an idle or removed operator is signed out: then the page
// goes to the sign-in form instead of saying "reconnecting" for ever. Otherwise the stream is opened again.
async function recheck() {
  try {
    const answer = await fetch("/session", { cache: "no-store" });
    if (answer.status === 401) {
      window.location.assign("/sign-in?ended=1");
      return;
    }
  } catch (error) {
    // the station is still gone: listen again, which fails and comes back here
  }
  listen();
}

function listen() {
  // The order the operator chose (?order=REF), else the station's newest open one.
  const chosen = document.getElementById("order").dataset.order;
  const source = new EventSource("/events" + (chosen ? "?order=" + encodeURIComponent(chosen) : ""));
  source.onopen = () => linkState(true, "live");
  source.onerror = () => {
    linkState(false, "LOST THE STATION: reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      window.setTimeout(recheck, 1000);
    }
  };
  source.addEventListener("snapshot", (event) => {
    const snapshot = JSON.parse(event.data);
    linkState(true, "live");
    snapshot.slots.forEach(renderSlot);
    text(document.getElementById("hubs-per-hour"), snapshot.totals.hubs_per_hour);
    renderLink(snapshot.reporting);
  });
  source.addEventListener("order", (event) => renderOrder(JSON.parse(event.data)));
}

async function act(path, fields) {
  const feedback = document.getElementById("feedback");
  const body = new URLSearchParams(fields);
  body.set("csrf", csrf);
  let answer;
  try {
    const response = await fetch(path, { method: "POST", body, headers: { "X-CSRF-Token": csrf } });
    answer = await response.json();
  } catch (error) {
    answer = { ok: false, message: "the station did not answer: " + error };
  }
  feedback.className = "feedback " + (answer.ok ? "good" : "bad");
  text(feedback, (answer.ok ? "✔ " : "✖ ") + answer.message);
  return answer;
}

document.getElementById("scan").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = document.getElementById("scan-id");
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const fields = { chf_id: field.value, order_ref: document.getElementById("scan-order").value };
  field.value = "";
  field.focus();
  act("/actions/" + mode, fields);
});

const closeButton = document.getElementById("close-order");
if (closeButton) {
  closeButton.addEventListener("click", () => {
    const ref = document.getElementById("scan-order").value;
    if (ref && window.confirm("Close order " + ref + "? Its report is written and its summary sent to the DSP.")) {
      act("/actions/close", { order_ref: ref });
    }
  });
}

const reloadButton = document.getElementById("reload-catalog");
if (reloadButton) {
  reloadButton.addEventListener("click", async () => {
    const answer = await act("/actions/reload-catalog", {});
    const serial = /serial (\d+) in force/.exec(answer.message || "");
    if (serial) text(document.getElementById("catalog-serial"), serial[1]);
  });
}

const choice = document.getElementById("order-choice");
if (choice) choice.addEventListener("change", () => document.getElementById("choose-order").submit());

listen();

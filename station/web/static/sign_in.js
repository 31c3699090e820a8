// The sign-in form: a badge scanner types the badge's code and Enter into the first field; Enter there moves to the
// PIN instead of submitting a form without one.
"use strict";

document.getElementById("operator").addEventListener("keydown", (event) => {
  const pin = document.getElementById("pin");
  if (event.key === "Enter" && !pin.value) {
    event.preventDefault();
    pin.focus();
  }
});

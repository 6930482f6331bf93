// BudgetRadar's admin behaviour, as a static file so the Content-Security-Policy can
// refuse every inline script. A form marked data-disable-on-submit disables its submit
// buttons once it is sent, so a double click cannot post (deploy, execute) twice.
"use strict";
document.addEventListener("submit", function (event) {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-disable-on-submit")) {
    return;
  }
  form.querySelectorAll("button, [type=submit]").forEach(function (button) {
    button.disabled = true;
  });
});

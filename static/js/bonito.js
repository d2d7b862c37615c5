// Copy buttons: <button data-copy="#selector">.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  const done = () => { button.textContent = "Copied"; setTimeout(() => (button.textContent = "Copy"), 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
  } else {
    const area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    document.execCommand("copy"); area.remove(); done();
  }
});

// Confirmations: <form data-confirm="Revoke …?">. The text comes from a data- attribute
// (HTML-escaped by the template) and is only ever passed to confirm() as a string, never
// parsed as script; the CSP forbids inline handlers, so this is the only way to confirm.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// Sliders show their value: <output data-range-for="name"> next to <input type="range" name="name">
// in the same form (the page renders the starting value; this follows the thumb).
document.addEventListener("input", (event) => {
  const input = event.target;
  if (input.type !== "range" || !input.form) return;
  for (const output of input.form.querySelectorAll("output[data-range-for]")) {
    if (output.dataset.rangeFor === input.name) output.textContent = input.value;
  }
});

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

// Playground: each model's answer streams in as the gateway sends it (POST to the form's
// data-stream URL, one request per model); the conversation is kept in the form's hidden
// history field, so the page also works without this script (the form posts).
(function () {
  const form = document.getElementById("playground-form");
  if (!form) return;
  const out = document.getElementById("playground-out");
  const history = document.getElementById("pg-history");
  const transcript = document.getElementById("pg-transcript");
  const error = document.getElementById("pg-error");
  const busy = document.getElementById("playground-busy");
  const streamBox = document.getElementById("pg-stream");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const showError = (message) => { error.textContent = message; error.hidden = !message; };
  const addTurn = (role, content) => {
    const li = el("li", { class: "turn turn-" + role });
    li.appendChild(el("strong", {}, role));
    li.appendChild(el("pre", {}, content));
    transcript.appendChild(li);
  };

  function card(id, model) {
    const section = el("section", { class: "card result", id: id, role: "status" });
    const title = el("h2", {}, model);
    const pre = el("pre", { class: "answer" });
    const code = el("code", {}, "");
    pre.appendChild(code);
    const dl = el("dl", { class: "grid" });
    const fields = {};
    for (const name of ["Model used", "Tokens", "Cost", "Latency", "Request id", "Smart route"]) {
      dl.appendChild(el("dt", {}, name));
      fields[name] = dl.appendChild(el("dd", {}, "…"));
    }
    section.append(title, pre, dl);
    return { section, title, code, fields };
  }

  // Reads one model's stream; resolves with its answer text, or null when it failed.
  async function run(pane, model, id) {
    const view = card(id, model);
    out.appendChild(view.section);
    const body = new FormData(form);
    body.set("pane", pane);
    let response;
    try {
      response = await fetch(form.dataset.stream, {
        method: "POST", body, headers: { "X-CSRFToken": csrf }, credentials: "same-origin",
      });
    } catch (e) {
      view.title.textContent = model + ": the server could not be reached";
      return null;
    }
    if (!response.ok) {
      let message = "error " + response.status;
      try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
      showError(message);
      view.section.remove();
      return null;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", text = "", usage = null, result = null, failed = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of event.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data || data === "[DONE]") continue;
        let parsed;
        try { parsed = JSON.parse(data); } catch (e) { continue; }
        if (name === "result") { result = parsed; continue; }
        if (parsed.error) { failed = parsed.error.message || "the stream failed"; continue; }
        if (parsed.usage) usage = parsed.usage;
        const choice = (parsed.choices || [])[0];
        const piece = choice && choice.delta && choice.delta.content;
        if (piece) { text += piece; view.code.textContent = text; }
      }
    }
    if (!result) result = { status: 0 };
    const ok = result.status === 200 && !failed && !result.error;
    view.section.classList.toggle("created", ok);
    if (!ok) {
      view.title.textContent = model + ": error " + (result.status || "");
      view.code.textContent = failed || result.error || "(no answer)";
    } else if (!text) {
      view.code.textContent = "(empty)";
    }
    view.fields["Model used"].textContent = (result.model_used || "—") + " via " + (result.provider || "—");
    view.fields["Tokens"].textContent = usage
      ? usage.prompt_tokens + " in, " + usage.completion_tokens + " out" : "not reported";
    view.fields["Cost"].textContent = window.bonitoUsd(result.cost || 0);
    view.fields["Latency"].textContent = (result.latency_ms || 0) + " ms (gateway overhead "
      + (result.overhead_ms || "n/a") + " ms)";
    view.fields["Request id"].textContent = result.request_id || "—";
    view.fields["Smart route"].textContent = result.route || "not smart-routed";
    return ok ? text : null;
  }

  form.addEventListener("submit", async (event) => {
    const submitter = event.submitter;
    if (submitter && submitter.name === "new") {
      event.preventDefault();
      history.value = "[]";
      transcript.replaceChildren();
      out.replaceChildren();
      showError("");
      return;
    }
    if (!streamBox.checked) return; // the plain form post
    event.preventDefault();
    const message = form.elements.message.value.trim();
    if (!message) { showError("Write a message."); return; }
    showError("");
    out.replaceChildren();
    busy.hidden = false;
    // Each pane is titled as its menu names the choice ("routing policy x" for a policy).
    const named = (select) => select.options[select.selectedIndex].text;
    const compare = form.elements.compare.value;
    const runs = [run("model", named(form.elements.model), "playground-result")];
    if (compare) runs.push(run("compare", named(form.elements.compare), "playground-result-2"));
    const [answer] = await Promise.all(runs);
    busy.hidden = true;
    if (answer !== null) {
      const turns = JSON.parse(history.value || "[]");
      turns.push({ role: "user", content: message }, { role: "assistant", content: answer });
      history.value = JSON.stringify(turns);
      addTurn("user", message);
      addTurn("assistant", answer);
      form.elements.message.value = "";
    }
  });
})();

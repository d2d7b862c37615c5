// Live tail for the Logs page: new requests arrive over a WebSocket and are prepended.
(function () {
  const status = document.getElementById("live-tail");
  const body = document.getElementById("log-rows");
  if (!status || !body) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + status.dataset.socket);
  // The page's filters (billing.selectors: exact matches; a model is the one requested or
  // used): a pushed row the page would not list is left out, like a row past its range's end.
  const query = new URLSearchParams(location.search);
  const wanted = (name) => query.get(name) || "";
  const until = status.dataset.until ? Number(status.dataset.until) : Infinity;
  const listed = (r) => {
    const model = wanted("model");
    if (model && r.model_requested !== model && r.model_used !== model) return false;
    for (const [param, field] of [["provider", "provider"], ["status", "status"], ["source", "source"]]) {
      if (wanted(param) && r[field] !== wanted(param)) return false;
    }
    for (const [param, field] of [["key", "key_id"], ["team", "team_id"]]) {
      if (wanted(param) && String(r[field]) !== wanted(param)) return false;
    }
    if (wanted("request_id").trim() && r.request_id !== wanted("request_id").trim()) return false;
    // The smart routing policy, as the server resolved the filter (an id, a name or the org
    // default's ""): a request no smart routing chose a tier for is none of its requests.
    const policy = status.dataset.policy;
    if (policy !== undefined && (r.routing_policy !== policy || !r.route_tier)) return false;
    return r.created_at < until;
  };
  // Each row is built as templates/billing/logs.html draws it, with DOM calls only (text is
  // never parsed as HTML). User-given names sit in <bdi>, so a right-to-left name (or one
  // saved before the names rule) cannot reorder the text around it.
  const el = (tag, text, attrs) => {
    const node = document.createElement(tag);
    node.textContent = text;
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  };
  const cell = (row, ...parts) => { const td = document.createElement("td"); td.append(...parts); row.appendChild(td); };
  socket.onopen = () => { status.textContent = "Live tail: on"; };
  socket.onclose = () => { status.textContent = "Live tail: off (reload to reconnect)"; };
  socket.onmessage = (event) => {
    const rows = JSON.parse(event.data).rows.filter(listed);
    if (!rows.length) return;
    const table = body.closest("table");
    if (table.hidden) {  // the page had no rows: its "No requests in this range" goes
      table.hidden = false;
      table.parentElement.querySelector(":scope > p.empty")?.remove();
    }
    for (const r of rows) {
      const tr = document.createElement("tr");
      const time = document.createElement("td");
      const link = document.createElement("a");
      link.href = status.dataset.detail + r.id + "/";
      link.textContent = new Date(r.created_at * 1000).toISOString().slice(5, 19).replace("T", " ");
      time.appendChild(link); tr.appendChild(time);
      cell(tr, ...(r.status !== "success"
        ? [r.status + " ", el("small", `(${r.http_status} ${r.error_type || "no error type"})`)]
        : [r.status]));
      const model = [el("bdi", r.model_requested || "— (none: model list)")];
      if (r.model_used && r.model_used !== r.model_requested) model.push(" → ", el("bdi", r.model_used));
      cell(tr, ...model);
      cell(tr, r.provider
        ? el("bdi", r.provider)
        : el("span", "— (not routed)", { title: "The request ended before a provider was chosen" }));
      cell(tr, r.key_id ? (r.key_name ? el("bdi", r.key_name) : "(key deleted)") : "— (no key)");
      cell(tr, `${r.input_tokens} / ${r.output_tokens}`);
      cell(tr, window.bonitoUsd(r.cost)); // as the server-rendered rows (core/money.py)
      cell(tr, `${r.latency_ms} ms`);
      tr.classList.add("fresh");
      body.prepend(tr);
    }
  };
})();

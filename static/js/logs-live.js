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
    return r.created_at < until;
  };
  const cell = (row, text) => { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); };
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
      cell(tr, r.status + (r.status !== "success" ? ` (${r.http_status} ${r.error_type || "no error type"})` : ""));
      cell(tr, r.model_requested || "— (none: model list)");
      cell(tr, r.provider || "— (not routed)");
      cell(tr, r.key_id ? (r.key_name || "(key deleted)") : "— (no key)");
      cell(tr, `${r.input_tokens} / ${r.output_tokens}`);
      cell(tr, `$${Number(r.cost).toFixed(6)}`);
      cell(tr, `${r.latency_ms} ms`);
      tr.classList.add("fresh");
      body.prepend(tr);
    }
  };
})();

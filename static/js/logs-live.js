// Live tail for the Logs page: new requests arrive over a WebSocket and are prepended.
(function () {
  const status = document.getElementById("live-tail");
  const body = document.getElementById("log-rows");
  if (!status || !body) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + status.dataset.socket);
  const cell = (row, text) => { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); };
  socket.onopen = () => { status.textContent = "Live tail: on"; };
  socket.onclose = () => { status.textContent = "Live tail: off (reload to reconnect)"; };
  socket.onmessage = (event) => {
    const { rows } = JSON.parse(event.data);
    body.closest("table").hidden = false;
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

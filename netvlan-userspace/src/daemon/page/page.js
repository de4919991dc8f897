// The live page: renders the snapshot embedded in the page at once, then
// each one the daemon pushes (server-sent events), with rates computed
// from the difference between consecutive snapshots.
"use strict";

let previous = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fill(id, head, rows, empty) {
  const table = document.getElementById(id);
  table.replaceChildren();
  const tr = el("tr");
  head.forEach((h) => tr.appendChild(el("th", h)));
  table.appendChild(tr);
  if (rows.length === 0) {
    const r = el("tr");
    const td = el("td", empty, "empty");
    td.colSpan = head.length;
    r.appendChild(td);
    table.appendChild(r);
  }
  rows.forEach((cells) => {
    const r = el("tr");
    cells.forEach((c) => {
      if (c instanceof Node) {
        const td = el("td");
        td.appendChild(c);
        r.appendChild(td);
      } else {
        r.appendChild(el("td", c, typeof c === "number" ? "n" : ""));
      }
    });
    table.appendChild(r);
  });
}

// Per second between the previous snapshot and this one ("" without one).
function rate(now, key, value, snap) {
  if (!previous || !previous.values.has(key)) return "";
  const seconds = (snap.time_ms - previous.time_ms) / 1000;
  if (seconds <= 0) return "";
  return Math.max(0, (value - previous.values.get(key)) / seconds).toFixed(1);
}

function render(snap) {
  const values = new Map();
  const keep = (key, value) => { values.set(key, value); return value; };
  const stats = snap.stats || { interfaces: [] };
  const ifaces = stats.interfaces || [];
  let frames = 0, drops = 0;
  ifaces.forEach((i) => {
    frames += i.frames.rx_packets;
    Object.values(i.drops).forEach((d) => { drops += d.rx_packets; });
  });
  document.getElementById("total-frames").textContent = frames;
  document.getElementById("total-drops").textContent = drops;
  document.getElementById("updated").textContent = new Date(snap.time_ms).toISOString();

  fill("networks", ["NAME", "DRIVER", "PARENT", "SUBNETS", "ENDPOINTS"],
    (snap.networks || []).map((n) => [n.name, n.driver, n.parent, n.subnets.join(", "), n.endpoints]),
    "no networks");

  fill("endpoints", ["ENDPOINT", "NETWORK", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "SPOOFED", "RX PKT/S", "TX PKT/S"],
    (stats.endpoints || []).map((e) => {
      const k = e.network + "/" + e.endpoint;
      return [e.endpoint, e.network, keep(k + "/rx", e.rx_packets), e.rx_bytes,
        keep(k + "/tx", e.tx_packets), e.tx_bytes, e.spoofed_packets,
        rate(values, k + "/rx", e.rx_packets, snap), rate(values, k + "/tx", e.tx_packets, snap)];
    }),
    "no endpoints");

  const vlans = [];
  const dropRows = [];
  const sprawl = [];
  ifaces.forEach((i) => {
    i.vlans.forEach((v) => {
      const k = i.ifname + "/" + v.vlan;
      vlans.push([i.ifname, v.vlan === 0 ? "untagged" : v.vlan, keep(k, v.rx_packets), v.rx_bytes,
        v.unregistered.rx_packets, v.flood.rx_packets, rate(values, k, v.rx_packets, snap)]);
    });
    Object.entries(i.drops).forEach(([reason, d]) => {
      if (d.rx_packets > 0) dropRows.push([i.ifname, "all", reason, d.rx_packets, d.rx_bytes]);
    });
    (i.vlan_drops || []).forEach((d) => {
      dropRows.push([i.ifname, d.vlan === 0 ? "untagged" : d.vlan, d.reason, d.rx_packets, d.rx_bytes]);
    });
    (i.mac_guards || []).forEach((g) => {
      const bar = el("div", undefined, "bar");
      const inner = el("div");
      const share = g.limit ? Math.min(1, g.learned / g.limit) : 0;
      inner.style.width = (share * 100).toFixed(0) + "%";
      if (share >= 1) bar.classList.add("full");
      bar.appendChild(inner);
      sprawl.push([i.ifname, g.vlan === 0 ? "untagged" : g.vlan, g.learned, g.limit === null ? "off" : g.limit,
        bar, g.over_limit_packets, g.action]);
    });
  });
  fill("vlans", ["PARENT", "VLAN", "PACKETS", "BYTES", "UNREGISTERED", "FLOOD", "PKT/S"], vlans, "no traffic yet");
  fill("drops", ["PARENT", "VLAN", "REASON", "PACKETS", "BYTES"], dropRows, "nothing dropped by policy");
  fill("sprawl", ["PARENT", "VLAN", "LEARNED", "LIMIT", "", "OVER LIMIT", "ACTION"], sprawl, "no MAC guard on");
  fill("traces", ["TIME (ns)", "IFINDEX", "POINT", "VERDICT", "VLAN", "SRC", "DST", "TYPE", "LEN"],
    (snap.traces || []).map((t) => [t.time_ns, t.ifindex, t.point,
      t.reason ? t.verdict + " (" + t.reason + ")" : t.verdict, t.vlan, t.src || "", t.dst || "",
      t.ethertype || "", t.orig_len]),
    "no trace events (start one with netvlan trace)");
  previous = { time_ms: snap.time_ms, values: values };
}

render(JSON.parse(document.getElementById("snapshot").textContent));

const events = new EventSource("/api/events");
const link = document.getElementById("link");
// Counted into the page, so a reader of the DOM can tell pushed numbers
// from the ones the page was loaded with.
let pushes = 0;
events.addEventListener("snapshot", (e) => {
  pushes += 1;
  document.getElementById("pushes").textContent = pushes;
  link.textContent = "live";
  link.className = "live";
  render(JSON.parse(e.data));
});
events.onerror = () => { link.textContent = "reconnecting"; link.className = ""; };

// The console's own script: draws each task graph (`.dag[data-dag]`) as SVG, laid out by
// dagre. Text goes in with textContent and colours come from CSS classes, so nothing here
// needs an inline script or style (the pages' Content-Security-Policy allows neither).
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var NODE_W = 150, NODE_H = 40;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function draw(box) {
    var data;
    try { data = JSON.parse(box.getAttribute("data-dag")); } catch (e) { return; }
    if (box.getAttribute("data-drawn") === box.getAttribute("data-dag")) return;
    var g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 48, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(function () { return {}; });
    data.nodes.forEach(function (n) { g.setNode(n.id, { width: NODE_W, height: NODE_H, data: n }); });
    data.edges.forEach(function (e) { g.setEdge(e[0], e[1]); });
    dagre.layout(g);
    var size = g.graph();
    var svg = el("svg", { viewBox: "0 0 " + (size.width || 1) + " " + (size.height || 1),
                          width: size.width, height: size.height, "class": "dag-svg" });
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                markerWidth: 6, markerHeight: 6, orient: "auto" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrow" }, marker);
    g.edges().forEach(function (e) {
      var pts = g.edge(e).points;
      var d = pts.map(function (p, i) { return (i ? "L" : "M") + p.x + "," + p.y; }).join(" ");
      el("path", { d: d, "class": "edge", "marker-end": "url(#arrow)" }, svg);
    });
    g.nodes().forEach(function (id) {
      var n = g.node(id);
      var group = el("g", { "class": "node s-" + n.data.state, "data-task": id,
                            "data-state": n.data.state,
                            transform: "translate(" + (n.x - NODE_W / 2) + "," + (n.y - NODE_H / 2) + ")" }, svg);
      el("rect", { width: NODE_W, height: NODE_H, rx: 6 }, group);
      var title = el("title", {}, group);
      title.textContent = id + " (" + n.data.action + "): " + n.data.state;
      var name = el("text", { x: 10, y: 17, "class": "name" }, group);
      name.textContent = id.length > 20 ? id.slice(0, 19) + "…" : id;
      var state = el("text", { x: 10, y: 32, "class": "sub" }, group);
      state.textContent = n.data.action + " · " + n.data.state;
    });
    box.replaceChildren(svg);
    box.setAttribute("data-drawn", box.getAttribute("data-dag"));
  }

  function drawAll(root) {
    var scope = root && root.querySelectorAll ? root : document;
    scope.querySelectorAll(".dag[data-dag]").forEach(draw);
  }

  // A keyed part sent again with the key it has already (`data-key`) is left as it is: a
  // signal form someone is filling in keeps its values, its focus and its caret while the
  // rest of the page follows the execution.
  function keepUnchanged(ev) {
    var old = ev.detail.target;
    var fresh = ev.detail.fragment && ev.detail.fragment.firstElementChild;
    if (!old || !fresh || !old.hasAttribute("data-key")) return;
    if (fresh.getAttribute("data-key") === old.getAttribute("data-key")) {
      ev.detail.shouldSwap = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:oobBeforeSwap", keepUnchanged);
  document.addEventListener("htmx:oobAfterSwap", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (ev) { drawAll(ev.target); });
})();

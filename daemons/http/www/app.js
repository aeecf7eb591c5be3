// The search page: a name typed is checked across the TLDs availd-http
// lists (/v1/config); answers stream in (/v1/stream, Server-Sent Events),
// the cached ones at once, the rest as the registries reply.
"use strict";
(function () {
  var form = document.getElementById("search");
  var input = document.getElementById("q");
  var list = document.getElementById("results");
  var note = document.getElementById("note");
  var tlds = [];
  var source = null;

  function row(domain) {
    var li = document.createElement("li");
    li.className = "pending";
    li.dataset.domain = domain;
    var name = document.createElement("span");
    name.className = "domain";
    name.textContent = domain;
    var verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.textContent = "checking…";
    li.appendChild(name);
    li.appendChild(verdict);
    return li;
  }

  function show(answer) {
    var li = list.children[answer.idx];
    if (!li) return;
    li.className = answer.availability;
    var verdict = li.querySelector(".verdict");
    verdict.textContent = answer.availability;
    if (answer.reason) {
      var why = document.createElement("span");
      why.className = "why";
      why.textContent = "(" + answer.reason + ")";
      verdict.appendChild(why);
    }
    li.dataset.source = answer.source;
  }

  function names(text) {
    var label = text.trim().toLowerCase().replace(/\s+/g, "");
    if (!label) return [];
    if (label.indexOf(".") >= 0) return [label];
    return tlds.map(function (t) { return label + "." + t; });
  }

  function search(text) {
    if (source) source.close();
    list.textContent = "";
    var asked = names(text);
    if (!asked.length) { note.textContent = ""; return; }
    asked.forEach(function (n) { list.appendChild(row(n)); });
    note.textContent = "checking " + asked.length + " names…";
    source = new EventSource("/v1/stream?domain=" + encodeURIComponent(asked.join(",")));
    source.addEventListener("answer", function (e) { show(JSON.parse(e.data)); });
    source.addEventListener("done", function () { note.textContent = "done"; source.close(); source = null; });
    source.onerror = function () {
      if (source) { source.close(); source = null; }
      note.textContent = "the server did not answer; try again";
    };
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); search(input.value); });
  fetch("/v1/config").then(function (r) { return r.json(); }).then(function (c) {
    tlds = c.tlds || [];
    document.body.dataset.ready = "1";
  });
})();

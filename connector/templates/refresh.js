(function () {
  // Replace the page's content in place every few seconds: the reader keeps their scroll.
  function tick() {
    fetch(location.href, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (fresh && live) { live.replaceWith(document.importNode(fresh, true)); }
        document.body.removeAttribute("data-stale");
      })
      .catch(function () { document.body.setAttribute("data-stale", ""); })
      .finally(function () { setTimeout(tick, {{ refresh_ms }}); });
  }
  setTimeout(tick, {{ refresh_ms }});
})();

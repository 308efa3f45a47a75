// The comparison page: keys 1/2/3 choose, the time on the page is sent with the vote, and the form is sent once.
(function () {
  "use strict";
  var form = document.getElementById("vote");
  if (!form) { return; }
  var shown = performance.now();
  var sent = false;
  var id = document.getElementById("submission_id");
  if (window.crypto && crypto.randomUUID) { id.value = crypto.randomUUID(); }
  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }
    sent = true;
    document.getElementById("client_ms").value = String(Math.round(performance.now() - shown));
    // Disable after the browser has read the pressed button's name/value into the submission.
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }, 0);
  });
  var keys = { "1": "choice-left", "2": "choice-equal", "3": "choice-right" };
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || sent) { return; }
    var target = keys[event.key];
    if (target) { event.preventDefault(); document.getElementById(target).click(); }
  });
})();

// Tells the dashboard the browser's time zone (rollout.preferences): a cookie read by TimeZoneMiddleware when
// the person has not chosen a zone in their preferences. No request of its own; the next page uses it.
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) return;
  var current = document.cookie.split("; ").filter(function (c) { return c.indexOf("rgd_tz=") === 0; })[0];
  if (current === "rgd_tz=" + zone) return;
  var secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "rgd_tz=" + zone + "; Path=/; Max-Age=31536000; SameSite=Lax" + secure;
})();

// Package web is the web console of jobsctl serve: server-rendered pages (html/template, with
// templates and static files embedded in the binary) and a JSON API under /api/, over the
// same jobsdb calls jobsctl makes. A little plain JavaScript (static/app.js) polls the API to
// keep the overview live; every page works without it.
//
// # Safety model
//
//   - Read-only unless Options.AllowActions: every POST is refused (403) and no page shows an
//     action button.
//   - Options.Token, when set, is required on every request, pages, API and static files
//     alike: an "Authorization: Bearer TOKEN" header, or the cookie that opening any page with
//     ?token=TOKEN sets (HttpOnly, SameSite=Strict). Tokens are compared in constant time.
//     The caller (jobsctl serve) refuses to listen beyond loopback without one.
//   - Without a token the Host header must name a loopback address (localhost, 127.0.0.0/8,
//     [::1]), so a web page cannot reach the console through DNS rebinding.
//   - Actions are POSTs protected against cross-site requests twice: Go's
//     http.CrossOriginProtection (Sec-Fetch-Site, else Origin against Host) and a per-process
//     random token that every form carries (field csrf) and API clients send as the
//     X-CSRF-Token header (GET /api/session gives it).
//   - Everything a page shows goes through html/template's contextual escaping: an error
//     message holding HTML or script is shown as text. The JavaScript writes only textContent
//     and SVG attributes. A Content-Security-Policy allows scripts, styles and connections from
//     the console's own origin only; nothing is loaded from elsewhere.
//   - Filters are typed values sent as placeholders (status names, a priority, key values typed
//     by their column, an exact error message): the console never takes SQL text, unlike
//     jobsctl --restrict.
//   - Lists are paged by keyset on the (status, priority, scheduled_time) index
//     (jobsdb.Jobs.Page): no OFFSET, so the last page costs what the first does.
//
// Field names of the JSON API are those of jobsctl -o json, for the same objects (a job, a
// table's progress, a stream priority, an action's result); the tests of internal/ctl compare
// the two.
package web

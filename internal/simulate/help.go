package simulate

// ApplianceHelp is the `dtfleet simulate` command's long help: what the fake serves, its faults,
// its untidiness and its control API.
const ApplianceHelp = `simulate serves the Darktrace API (/modelbreaches, /aianalyst/incidentevents, /antigena, /status,
/summarystatistics) from a deterministic generated dataset that starts --days ago and keeps
growing in real time, verifying every request's signature and date like the appliance. It prints
the URL, the (test) tokens and a configuration snippet to paste, then serves until interrupted.
With --tls it serves HTTPS with a new self-signed certificate, written to a temporary directory
whose path it prints (for tls.ca_file).

Faults: --fault-rate injects random faults, drawn from --fault-kinds (default: the retryable ones,
status, rate_limit, stall, reset, truncate). --fault SPEC scripts one fault (repeatable), consumed
by the first matching request: a kind (status, rate_limit, stall, reset, truncate, login_page,
redirect_403, forbidden, input_error, signature_error, date_error, login_redirect, maintenance) then
comma-separated settings: endpoint=/path or service=NAME, start=T,end=T (the request's window must
cover [start, end]; RFC 3339 or epoch ms), times=N (-1: every matching request), for=DUR (every
matching request for that long on the appliance clock from the first), status=CODE, retry_after=DUR,
retry_after_date=true, stall=DUR, after_events=N. For example:
  --fault 'rate_limit,retry_after=3s,times=2'
  --fault 'input_error,service=modelbreaches,start=2024-05-01T10:00:00Z,end=2024-05-01T11:00:00Z,times=-1'

Untidiness (off by default; --realistic turns all of it on for live runs: 10% of breaches up to
3h late, AI Analyst events visible up to 5m after createdAt, Antigena actions that are extended,
cleared and expire, the appliance clock 90s ahead; a flag set explicitly overrides its part):
--late-breaches SHARE (created up to --max-breach-delay after their time, invisible until then),
--incident-delay DUR, --incident-window event|change (what the AI Analyst window filters on:
createdAt, or when the event became visible), --action-lifecycle, --action-window event|change
(start, or the current updated), --clock-offset DUR (the appliance clock, its Date header and its
±30 minute DTAPI-Date check). Transient faults for a time span: --fault 'date_error,for=10m',
'signature_error,for=5m' (token rotation), 'login_redirect,for=2m', 'maintenance,status=503,for=15m'.

Control API (no authentication, same address): GET /_dtfleet/truth/due?service=S&start=T&end=T&at=T
(what a complete collector must have delivered by appliance time at: every breach and AI Analyst
event visible by then, every Antigena action state reached by then, keyed codeid:state), GET /_dtfleet/truth/keys?service=S&start=T&end=T (the key
of every event with event time in [start, end); start defaults to the data's start, end to now),
GET /_dtfleet/truth/events?service=S&start=T&end=T (those events, as JSON lines), GET /_dtfleet/truth/response?service=S&start=T&end=T (what a
dtfleet request for that window returns now), POST /_dtfleet/faults (one --fault SPEC per line),
DELETE /_dtfleet/faults, GET /_dtfleet/stats.`

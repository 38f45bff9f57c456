-- wrk: POST a form body with optional Basic auth; prints one WRKJSON line at the end.
-- Env: WRK_PATH, WRK_BODY, WRK_BASIC (base64 "id:secret", optional).
wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/oauth2/token"
wrk.body = os.getenv("WRK_BODY") or "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local basic = os.getenv("WRK_BASIC")
if basic and basic ~= "" then
  wrk.headers["Authorization"] = "Basic " .. basic
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end

-- wrk script for POST /v1/events: every request a new message (unique external_id) from one
-- of 1,000 customers, so conversations are reused as in real traffic.
-- env: TOKEN (an events:write token), PREFIX (external ids start with it: runs against one
-- database must differ, or the second run's events are answered as retries)
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

prefix = ""

function init(args)
  prefix = os.getenv("PREFIX") or ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
end

function request()
  counter = counter + 1
  local cust = (counter * 7 + tid * 131) % 1000
  local body = string.format(
    '{"channel":"sms","from":{"phone":"+1555%07d"},"body":"bench message %d","external_id":"%sb%d-%d"}',
    cust, counter, prefix, tid, counter)
  return wrk.format(nil, "/v1/events", nil, body)
end

local errors = 0
function response(status, headers, body)
  if status ~= 201 and status ~= 200 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"label":"events-load","requests":%d,"seconds":%.2f,"rps":%.1f,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

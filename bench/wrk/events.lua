-- One event per request, each with an id no other request of the run has, every request built before the
-- load starts: `request()` only takes the next one from a table, so wrk spends no Lua per request.
-- The JWT API (/events, or /events/batch), or with BENCH_BASIC the tracking API (/v1/track, or /v1/batch).
-- Environment: BENCH_TOKEN (JWT), BENCH_BASIC (a source's write key as Basic credentials, base64 of "key:"),
-- BENCH_BATCH (events per request), BENCH_PREBUILT (requests built per thread; past them the ids repeat,
-- which OpenSearch's create turns into one document: bench/generator.py sizes it to the run).
local token = os.getenv("BENCH_TOKEN")
local basic = os.getenv("BENCH_BASIC") or ""
local tracking = basic ~= ""
local batch = tonumber(os.getenv("BENCH_BATCH") or "1")
local prebuilt = tonumber(os.getenv("BENCH_PREBUILT") or "100000")
local path
if tracking then path = batch > 1 and "/v1/batch" or "/v1/track"
else path = batch > 1 and "/events/batch" or "/events" end
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local function event(prefix, n)
  if tracking then
    return string.format(
      '{"type":"track","messageId":"%s-%d","userId":"bench-user","event":"Order Completed",'
      .. '"properties":{"price":1200,"currency":"KRW","items":["a","b"]},'
      .. '"context":{"library":{"name":"bench","version":"1"}}}', prefix, n)
  end
  return string.format(
    '{"log_id":"%s-%d","page":"/home","event":"click","label":"buy","target":"#cta","section":"hero",'
    .. '"param":{"price":1200,"currency":"KRW","items":["a","b"]}}', prefix, n)
end

function init(args)
  local prefix = string.format("%d-%d-%d", os.time(), thread_id, math.random(1, 1e9))
  local headers
  if tracking then
    headers = {["Authorization"] = "Basic " .. basic, ["Content-Type"] = "application/json"}
  else
    headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json",
               ["device-uuid"] = "bench-device", ["app-version"] = "1.0.0", ["os-version"] = "bench-os"}
  end
  requests, count, next_one = {}, math.max(1, math.floor(prebuilt / batch)), 0
  local n = 0
  for i = 1, count do
    local events = {}
    for j = 1, batch do n = n + 1; events[j] = event(prefix, n) end
    local body = batch == 1 and events[1] or table.concat(events, ",")
    if batch > 1 then body = tracking and ('{"batch":[' .. body .. ']}') or ("[" .. body .. "]") end
    requests[i] = wrk.format("POST", path, headers, body)
  end
end

function request()
  next_one = next_one % count + 1
  return requests[next_one]
end

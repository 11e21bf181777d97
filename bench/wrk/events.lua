-- One event per request, each with an id no other request of any run has: the JWT API (/events, or
-- /events/batch), or with BENCH_BASIC the tracking API (/v1/track, or /v1/batch).
-- Environment: BENCH_TOKEN (JWT), BENCH_BASIC (a source's write key as Basic credentials, base64 of "key:"),
-- BENCH_BATCH (events per request).
local token = os.getenv("BENCH_TOKEN")
local basic = os.getenv("BENCH_BASIC") or ""
local tracking = basic ~= ""
local batch = tonumber(os.getenv("BENCH_BATCH") or "1")
local path
if tracking then path = batch > 1 and "/v1/batch" or "/v1/track"
else path = batch > 1 and "/events/batch" or "/events" end
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  prefix = string.format("%d-%d-%d", os.time(), thread_id, math.random(1, 1e9))
  counter = 0
  if tracking then
    headers = {["Authorization"] = "Basic " .. basic, ["Content-Type"] = "application/json"}
  else
    headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json",
               ["device-uuid"] = "bench-device", ["app-version"] = "1.0.0", ["os-version"] = "bench-os"}
  end
end

local function event()
  counter = counter + 1
  if tracking then
    return string.format(
      '{"type":"track","messageId":"%s-%d","userId":"bench-user","event":"Order Completed",'
      .. '"properties":{"price":1200,"currency":"KRW","items":["a","b"]},'
      .. '"context":{"library":{"name":"bench","version":"1"}}}', prefix, counter)
  end
  return string.format(
    '{"log_id":"%s-%d","page":"/home","event":"click","label":"buy","target":"#cta","section":"hero",'
    .. '"param":{"price":1200,"currency":"KRW","items":["a","b"]}}', prefix, counter)
end

function request()
  if batch == 1 then
    return wrk.format("POST", path, headers, event())
  end
  local events = {}
  for i = 1, batch do events[i] = event() end
  local body = table.concat(events, ",")
  return wrk.format("POST", path, headers, tracking and ('{"batch":[' .. body .. ']}') or ("[" .. body .. "]"))
end

-- One event per request, each with a log_id no other request of any run has.
-- Environment: BENCH_TOKEN (JWT), BENCH_BATCH (events per request; 1 posts to /events).
local token = os.getenv("BENCH_TOKEN")
local batch = tonumber(os.getenv("BENCH_BATCH") or "1")
local path = batch > 1 and "/events/batch" or "/events"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  prefix = string.format("%d-%d-%d", os.time(), thread_id, math.random(1, 1e9))
  counter = 0
  headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json",
             ["device-uuid"] = "bench-device", ["app-version"] = "1.0.0", ["os-version"] = "bench-os"}
end

local function event()
  counter = counter + 1
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
  return wrk.format("POST", path, headers, "[" .. table.concat(events, ",") .. "]")
end

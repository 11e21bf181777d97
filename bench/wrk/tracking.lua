-- The tracking API: one track message per request to /v1/track, or BENCH_BATCH of them to /v1/batch, each with a
-- messageId no other request of any run has. Environment: BENCH_BASIC (a source's write key as Basic
-- credentials, base64 of "key:"), BENCH_BATCH.
local basic = os.getenv("BENCH_BASIC")
local batch = tonumber(os.getenv("BENCH_BATCH") or "1")
local path = batch > 1 and "/v1/batch" or "/v1/track"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  prefix = string.format("%d-%d-%d", os.time(), thread_id, math.random(1, 1e9))
  counter = 0
  headers = {["Authorization"] = "Basic " .. basic, ["Content-Type"] = "application/json"}
end

local function message()
  counter = counter + 1
  return string.format(
    '{"type":"track","messageId":"%s-%d","userId":"bench-user","event":"Order Completed",'
    .. '"properties":{"price":1200,"currency":"KRW","items":["a","b"]},'
    .. '"context":{"library":{"name":"bench","version":"1"}}}', prefix, counter)
end

function request()
  if batch == 1 then
    return wrk.format("POST", path, headers, message())
  end
  local messages = {}
  for i = 1, batch do messages[i] = message() end
  return wrk.format("POST", path, headers, '{"batch":[' .. table.concat(messages, ",") .. ']}')
end

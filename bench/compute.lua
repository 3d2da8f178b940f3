-- wrk script for bench/compute.py: each request POSTs one State Protocol change message
-- (an upsert of one of <keys> keys, or now and then a delete) to <path>.
-- Arguments after "--": <path> <keys>. done() prints one JSON line.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  keys = tonumber(args[2])
  n = tid * 1000003
  ok, bad = 0, 0
end

function request()
  n = n + 1
  local key = "k" .. (n % keys)
  local body
  if n % 10 == 0 then
    body = '{"type":"user","key":"' .. key .. '","headers":{"operation":"delete"}}'
  else
    body = '{"type":"user","key":"' .. key .. '","value":{"n":' .. n ..
           ',"name":"user ' .. key .. '"},"headers":{"operation":"upsert"}}'
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local good, errors = 0, 0
  for _, t in ipairs(threads) do
    good = good + t:get("ok")
    errors = errors + t:get("bad")
  end
  io.write(string.format('{"ok": %d, "errors": %d, "seconds": %.3f, "p50_ms": %.3f, ' ..
                         '"p99_ms": %.3f}\n', good, errors, summary.duration / 1e6,
                         latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

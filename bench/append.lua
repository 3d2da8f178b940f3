-- wrk script for the append workloads (bench/run.py drives it).
-- Arguments after "--": <streams> <path-prefix> <producer-prefix or "-"> <payload bytes>
-- Each request POSTs one payload to the thread's current stream; each answer moves the thread
-- to the next stream (round robin, each thread starting at its own offset). With a producer
-- prefix every thread sends Producer-Id <prefix><thread>, Producer-Epoch 0 and a
-- Producer-Seq that counts up from 0 per stream; run.py starts one thread per connection so
-- each connection is its own producer and seqs arrive in order. State advances in response(),
-- not request(): wrk calls request() once more on thread 0 to check the script, and a
-- request lost to a reconnect is then resent with the same seq.
-- Any status outside 200-299 counts as an error. done() prints one JSON line.
local threads, counter = {}, 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  nstreams = tonumber(args[1])
  producer = args[3] ~= "-" and (args[3] .. tid) or nil
  body = string.rep("x", tonumber(args[4]))
  paths, seqs = {}, {}
  for i = 1, nstreams do
    paths[i] = args[2] .. (i - 1)
    seqs[i] = 0
  end
  cur = tid % nstreams + 1
  ok, bad, codes = 0, 0, ""
end

function request()
  local i = cur
  local h = { ["Content-Type"] = "application/octet-stream" }
  if producer then
    h["Producer-Id"] = producer
    h["Producer-Epoch"] = "0"
    h["Producer-Seq"] = tostring(seqs[i])
  end
  return wrk.format("POST", paths[i], h, body)
end

function response(status, headers, body)
  seqs[cur] = seqs[cur] + 1
  cur = cur % nstreams + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    if #codes < 60 then codes = codes .. status .. " " end
  end
end

function done(summary, latency, requests)
  local okn, badn, codes = 0, 0, ""
  for _, t in ipairs(threads) do
    okn = okn + t:get("ok")
    badn = badn + t:get("bad")
    if #codes < 60 then codes = codes .. t:get("codes") end
  end
  local e = summary.errors
  io.write(string.format(
    '{"ok":%d,"non2xx":%d,"codes":"%s","socket_errors":%d,"duration_us":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    okn, badn, codes, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end

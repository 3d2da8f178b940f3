// SSE fan-out load generator (bench/run.py drives it; needs only Node's standard library).
//
//   node sse_fanout.mjs <stream-url> <subscribers> <appends-per-s> <seconds> <grace-seconds>
//
// Opens <subscribers> connections to <stream-url>?offset=now&live=sse, waits until each has
// seen its first control event, then one writer POSTs {"i": n, "t": send-time-ms} to the
// (application/json) stream at about <appends-per-s> for <seconds>, without waiting for
// earlier answers. Each subscriber records, for each message, now - t. Once every append
// has an answer (at most DRAIN_S more) and <grace-seconds> have passed, it prints one JSON
// line: delivered / expected (expected = appends tried x ready subscribers), p50 / p99 / max
// delivery latency in ms, and errors. Subscribers not ready after CONNECT_S are left out.
import http from "node:http"
import { performance } from "node:perf_hooks"

const [url, nSubs, rate, seconds, grace] = process.argv.slice(2)
const subs = Number(nSubs)
const CONNECT_S = 60
const DRAIN_S = 15
const now = () => performance.timeOrigin + performance.now()
const latencies = []
const errors = []
let delivered = 0
let duplicates = 0
let ready = 0
const states = []

function subscribe(id) {
  return new Promise((resolve) => {
    const seen = new Set()
    const me = { isReady: false, counted: false }
    states.push(me)
    let buf = ""
    const req = http.get(`${url}?offset=now&live=sse`, { agent: false }, (res) => {
      if (res.statusCode !== 200) {
        errors.push(`subscriber ${id}: HTTP ${res.statusCode}`)
        res.resume()
        return resolve()
      }
      res.setEncoding("utf8")
      res.on("data", (chunk) => {
        buf += chunk.replace(/\r\n?/g, "\n")
        let end
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end)
          buf = buf.slice(end + 2)
          let type = "message"
          const data = []
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim()
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""))
          }
          if (type === "control" && !me.isReady) {
            me.isReady = true
            ready++
            resolve()
          } else if (type === "data" && me.counted) {
            const t = now()
            let msgs = JSON.parse(data.join("\n"))
            if (!Array.isArray(msgs)) msgs = [msgs]
            for (const m of msgs) {
              if (seen.has(m.i)) { duplicates++; continue }
              seen.add(m.i)
              delivered++
              latencies.push(t - m.t)
            }
          }
        }
      })
      res.on("error", (e) => errors.push(`subscriber ${id}: ${e.message}`))
    })
    req.on("error", (e) => { errors.push(`subscriber ${id}: ${e.message}`); resolve() })
    sockets.push(req)
  })
}

const sockets = []
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref())

function append(i, body = JSON.stringify({ i, t: now() }), retry = true) {
  return new Promise((resolve) => {
    const req = http.request(url, {
      method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
    }, (res) => {
      res.resume()
      if (res.statusCode < 200 || res.statusCode > 299) errors.push(`append ${i}: HTTP ${res.statusCode}`)
      resolve(res.statusCode >= 200 && res.statusCode <= 299)
    })
    req.on("error", (e) => {
      // A kept-alive socket the server closed as we reused it: send once more (same i and t;
      // subscribers drop duplicates), as Node's docs advise.
      if (retry && req.reusedSocket && e.code === "ECONNRESET") return resolve(append(i, body, false))
      errors.push(`append ${i}: ${e.message}`)
      resolve(false)
    })
    req.end(body)
  })
}

const t0 = now()
// Connect in batches so a slow accept queue does not turn into connection errors.
const connecting = (async () => {
  for (let i = 0; i < subs; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, subs - i) }, (_, k) => subscribe(i + k)))
  }
})()
await Promise.race([connecting, deadline(CONNECT_S * 1000)])
const readyAtStart = ready
for (const st of states) st.counted = st.isReady
const connectS = (now() - t0) / 1000
let sent = 0
const pending = []
const start = now()
const total = Math.max(1, Math.round(Number(rate) * Number(seconds)))
for (let i = 0; i < total; i++) {
  const due = start + (i * 1000) / Number(rate)
  if (due > now()) await sleep(due - now())
  pending.push(append(i).then((ok) => { if (ok) sent++ }))
}
let answered = 0
for (const p of pending) p.then(() => answered++)
await Promise.race([Promise.all(pending), deadline(DRAIN_S * 1000)])
const writeS = (now() - start) / 1000
await sleep(Number(grace) * 1000)
for (const r of sockets) r.destroy()
agent.destroy()

latencies.sort((a, b) => a - b)
const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null
const cpu = process.cpuUsage()
console.log(JSON.stringify({
  subscribers: subs, ready: readyAtStart, connect_s: connectS, appends: total,
  unanswered: total - answered, sent, write_s: writeS,
  expected: total * readyAtStart, delivered, duplicates,
  p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: latencies.length ? latencies[latencies.length - 1] : null,
  errors: errors.length, first_errors: errors.slice(0, 5),
  client_cpu_s: (cpu.user + cpu.system) / 1e6,
}))
process.exit(0)

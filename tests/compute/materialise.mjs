// Reads {name: [State Protocol message, ...]} on stdin and prints {name: state}: each list is
// applied in order to a fresh MaterializedState of @durable-streams/state (a reset control
// message clears it; snapshot-start / snapshot-end delimit a snapshot and change nothing),
// and the state is printed as sorted JSON [[type, key, value], ...] (the Python model's form).
import { MaterializedState } from "@durable-streams/state";

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

function canonical(state) {
  const rows = [];
  for (const type of state.types) {
    for (const [key, value] of state.getType(type)) rows.push([type, key, sortKeys(value)]);
  }
  rows.sort((a, b) => {
    const x = JSON.stringify(a), y = JSON.stringify(b);
    return x < y ? -1 : x > y ? 1 : 0;
  });
  return JSON.stringify(rows);
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const runs = JSON.parse(input);
  const out = {};
  for (const [name, messages] of Object.entries(runs)) {
    const state = new MaterializedState();
    for (const message of messages) {
      const control = message.headers && message.headers.control;
      if (control === "reset") state.clear();
      else if (control === undefined) state.apply(message);
    }
    out[name] = canonical(state);
  }
  process.stdout.write(JSON.stringify(out));
});

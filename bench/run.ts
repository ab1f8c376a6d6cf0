/**
 * Throughput and memory of the whole pipeline against a hand-written baseline,
 * measured in the same run against the same emulator process.
 *
 *   npm run bench                 # 100,000 rows
 *   npm run bench -- --quick      # 10,000 rows
 *   npm run bench -- --rows 20000 --repeat 3
 *
 * Prints rows/s, seconds and peak RSS of each side and the ratio offpeak/baseline
 * (medians when --repeat > 1). Both sides read the same CSV, send the same
 * requests in batches of --max-requests with --in-flight batches at once, and
 * write one JSONL row per input row; both outputs are checked for every row.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { readParts, repo, writeTickets } from "../test/support/files.ts"

const { values } = parseArgs({
  options: {
    rows: { type: "string", default: "100000" },
    quick: { type: "boolean", default: false },
    repeat: { type: "string", default: "1" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" }
  }
})
const rows = values.quick ? 10_000 : Number(values.rows)
const repeat = Math.max(1, Number(values.repeat))
const data = path.join(repo, "bench/.data")
fs.mkdirSync(data, { recursive: true })
const input = path.join(data, `tickets-${rows}.csv`)
if (!fs.existsSync(input)) writeTickets(input, rows, 42)
const inputMb = fs.statSync(input).size / 1e6

const runNode = (args: ReadonlyArray<string>) =>
  new Promise<string>((resolve, reject) => {
    // both sides with the offpeak binary's Node flags (packages/core/src/bin.ts)
    const child = spawn(process.execPath, ["--max-semi-space-size=8", ...args], { cwd: repo, stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (d) => (out += d))
    child.on("exit", (code) => code === 0 ? resolve(out) : reject(new Error(`${args.join(" ")} exited ${code}`)))
  })

// one emulator process for the whole run, answering as fast as it can
const emulatorDir = fs.mkdtempSync(path.join(data, "emulator-"))
const emulator = spawn(process.execPath, [
  path.join(repo, "packages/core/src/bin.ts"),
  "emulator",
  "openai",
  "--dir",
  emulatorDir,
  "--knobs",
  JSON.stringify({ linesPerSecond: 1e9, validationMs: 0, finalizingMs: 0 })
], { cwd: repo, stdio: ["ignore", "pipe", "inherit"] })
const url = await new Promise<string>((resolve) => {
  let out = ""
  emulator.stdout.on("data", (d) => {
    out += d
    const match = /http:\/\/\S+/.exec(out)
    if (match) resolve(match[0])
  })
})

interface Measure {
  readonly rows: number
  readonly seconds: number
  readonly maxRssMb: number
}
const results: { baseline: Array<Measure>; offpeak: Array<Measure> } = { baseline: [], offpeak: [] }
const common = ["--input", input, "--url", url, "--max-requests", values["max-requests"]!, "--in-flight", values["in-flight"]!]
try {
  for (let i = 0; i < repeat; i++) {
    const work = fs.mkdtempSync(path.join(data, "run-"))
    const baseOut = path.join(work, "baseline.jsonl")
    const b = JSON.parse(await runNode(["bench/baseline.ts", ...common, "--out", baseOut, "--work", path.join(work, "b")])) as Measure
    const baseRows = fs.readFileSync(baseOut, "utf8").split("\n").filter((l) => l.length > 0).length
    if (baseRows !== rows) throw new Error(`baseline wrote ${baseRows} rows, expected ${rows}`)
    results.baseline.push(b)
    const out = path.join(work, "offpeak")
    const o = JSON.parse(await runNode(["bench/offpeak.ts", ...common, "--out", out, "--state", path.join(work, "state")])) as Measure
    const offRows = readParts(out).length
    if (offRows !== rows) throw new Error(`offpeak wrote ${offRows} rows, expected ${rows}`)
    results.offpeak.push(o)
    fs.rmSync(work, { recursive: true, force: true })
  }
} finally {
  emulator.kill()
  fs.rmSync(emulatorDir, { recursive: true, force: true })
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const summarize = (ms: ReadonlyArray<Measure>) => ({
  seconds: median(ms.map((m) => m.seconds)),
  rowsPerSecond: median(ms.map((m) => rows / m.seconds)),
  maxRssMb: median(ms.map((m) => m.maxRssMb))
})
const base = summarize(results.baseline)
const off = summarize(results.offpeak)
const fmt = (n: number, d = 0) => n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d })
console.log(`\n${fmt(rows)} rows (${fmt(inputMb, 1)} MB CSV), batches of ${values["max-requests"]}, ${values["in-flight"]} in flight, ${repeat} run(s), medians\n`)
console.log("| side | seconds | rows/s | peak RSS MB |")
console.log("|---|---|---|---|")
console.log(`| hand-written baseline | ${fmt(base.seconds, 2)} | ${fmt(base.rowsPerSecond)} | ${fmt(base.maxRssMb)} |`)
console.log(`| offpeak | ${fmt(off.seconds, 2)} | ${fmt(off.rowsPerSecond)} | ${fmt(off.maxRssMb)} |`)
console.log(`\nthroughput ratio offpeak/baseline: ${fmt(off.rowsPerSecond / base.rowsPerSecond, 2)}`)
console.log(`peak RSS ratio offpeak/baseline: ${fmt(off.maxRssMb / base.maxRssMb, 2)}`)

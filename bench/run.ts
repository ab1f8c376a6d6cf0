/**
 * Throughput, memory and latency of the whole pipeline against hand-written baselines,
 * for each provider, every side run against a fresh emulator process of its own.
 *
 *   npm run bench                                  # 100,000 rows, then the latency scenario; every provider
 *   npm run bench -- --quick                       # 10,000 rows (what CI runs, with --max-rss-mb)
 *   npm run bench -- --rows 20000 --providers anthropic
 *   npm run bench -- --sizes 10000,100000,1000000 --repeat 3
 *   npm run bench -- --latency                     # only the latency scenario
 *   npm run bench -- --wide 5000,50000 --rows 100000 --providers openai   # wide rows (~5 KB and ~50 KB of text)
 *   npm run bench -- --pg-embeddings --rows 100000   # Postgres → embeddings → Postgres (OFFPEAK_TEST_PG_URL or --pg-url)
 *   npm run bench -- --rows 100000 --providers openai --upload-mbps 4   # uploads over a 4 MB/s link
 *
 * Flags: --rows N | --sizes N,N,… | --quick (10,000) choose the sizes; --repeat K runs each
 * side K times (medians are reported); --providers openai,anthropic,gemini (default all three);
 * --max-requests (10,000) and --in-flight (3) set the batching of both sides; --latency
 * runs the latency scenario: 50,000 rows sent as one batch, one in flight (run by default
 * when no size is given); --max-rss-mb N exits 1 when offpeak's median peak RSS exceeds N MB
 * in any scenario (a memory bound for CI, never a timing assertion).
 * --wide W,W,… runs the wide-rows scenario instead (OpenAI only): each size's rows with ~W bytes of text each
 * (bench/wide.ts: varied deterministic prose, a two-field label of at most 20 output tokens, sink rows `{ id, output }`);
 * its inputs (wide-<W>-<rows>.csv, up to gigabytes) are generated streaming once and reused, after checking the free
 * disk holds the input and ~3 times it for the run (offpeak's ledger keeps the records, the emulator the uploads).
 * --pg-embeddings runs the Postgres → embeddings → Postgres scenario instead (OpenAI only): per size it drops and
 * recreates the schema offpeak_bench_pg with `documents (id, text)` seeded with that many short ticket-like sentences
 * (deterministic), then per side creates a fresh target table `(id integer primary key, embedding vector(256))`
 * (`real[]` when the server has no pgvector) and runs bench/offpeak.ts --pg-embeddings (bench/pg-embeddings.ts:
 * Postgres source in keyset pages, text-embedding-3-small embeddings, Postgres sink merging on id) or
 * bench/baseline-pg-embeddings.ts (`pg` keyset pages + the openai SDK + multi-row INSERT … ON CONFLICT); the target
 * must hold every source id once with a vector of 256 numbers, a sample of them equal to the engine's vector of their
 * text (bench/pg-embeddings-db.ts). The database: --pg-url, else OFFPEAK_TEST_PG_URL. The last row committed is the
 * side's last sink transaction returning.
 * --upload-mbps M reads each batch upload at M MB/s at the OpenAI emulator (its `uploadBytesPerSecond`), as a link to
 * the provider would, on both sides (OpenAI only).
 * --sample-memory writes offpeak's process.memoryUsage() every 250 ms to bench/.data/memory-<provider>-<scenario>.jsonl
 * and adds the peak heap, external and array-buffer MB to its progress line.
 *
 * Inputs are generated deterministically into bench/.data (git-ignored). Each run starts
 * `offpeak emulator <provider>` with a `finishedLog`, so the emulator writes one line per
 * batch whose results became readable (epoch ms, request and result bytes), then runs
 * bench/baseline-<provider>.ts or bench/offpeak.ts as a child process as the offpeak binary
 * runs (`--max-semi-space-size=8`, `MALLOC_ARENA_MAX=2`), and checks the output holds every input row exactly
 * once (by id) with an answer. Per size and provider it prints rows/s of both sides and
 * their ratio, CPU seconds per 1,000 rows of each side's process and their ratio (user +
 * system CPU of every thread of the child, loading included, as the child reads it from
 * `process.resourceUsage()` when its work is done; the emulator's CPU is not counted),
 * peak RSS, batch bytes sent and parsed per second of the run (the emulator's
 * input and result bytes of that run over its seconds), and commit-after-complete latency:
 * from the emulator's last batch of that run completing to the last row committed (the
 * baseline's output file closed; offpeak's last sink write, part file or manifest). That
 * includes waiting for the poll that sees the batch ended (100 ms growing to 1 s on both
 * sides, and every 100 ms while an OpenAI batch is finalizing); commit-after-seen starts at
 * that poll instead.
 * Markdown tables go to stdout (progress to stderr); the same results as JSON to
 * bench/.data/last-run.json.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { parseArgs } from "node:util"
import { bin, repo, writeTickets } from "../test/support/files.ts"
import * as Wide from "./wide.ts"

// ===== options =====

const { values } = parseArgs({
  options: {
    rows: { type: "string" },
    sizes: { type: "string" },
    quick: { type: "boolean", default: false },
    repeat: { type: "string", default: "1" },
    providers: { type: "string" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" },
    latency: { type: "boolean", default: false },
    "max-rss-mb": { type: "string" },
    wide: { type: "string" },
    "sample-memory": { type: "boolean", default: false },
    "pg-embeddings": { type: "boolean", default: false },
    "pg-url": { type: "string" },
    "upload-mbps": { type: "string" }
  }
})

const positive = (flag: string, text: string) => {
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer, got "${text}"`)
  return n
}
const PROVIDERS = ["openai", "anthropic", "gemini"] as const
type ProviderName = (typeof PROVIDERS)[number]
const pgEmbeddings = values["pg-embeddings"]
const providers = (values.providers ?? (pgEmbeddings ? "openai" : PROVIDERS.join(","))).split(",").map((p) => p.trim()).filter((p) => p.length > 0).map((p) => {
  if (!(PROVIDERS as ReadonlyArray<string>).includes(p)) throw new Error(`unknown provider "${p}" (known: ${PROVIDERS.join(", ")})`)
  return p as ProviderName
})
const sizesFlag = values.sizes ?? (values.quick ? "10000" : values.rows)
const sizes = sizesFlag === undefined ? (values.latency ? [] : [100_000]) : sizesFlag.split(",").map((s) => positive("sizes", s.trim()))
const repeat = positive("repeat", values.repeat)
const maxRequests = positive("max-requests", values["max-requests"])
const inFlight = positive("in-flight", values["in-flight"])
const maxRssMb = values["max-rss-mb"] === undefined ? undefined : positive("max-rss-mb", values["max-rss-mb"])
const widths = values.wide === undefined ? [] : values.wide.split(",").map((s) => positive("wide", s.trim()))
if (widths.length > 0 && providers.some((p) => p !== "openai")) {
  throw new Error(`--wide runs against OpenAI only (its baseline is bench/baseline-openai.ts): add --providers openai`)
}
if (pgEmbeddings && providers.some((p) => p !== "openai")) {
  throw new Error(`--pg-embeddings runs against OpenAI only (its baseline is bench/baseline-pg-embeddings.ts)`)
}
if (pgEmbeddings && widths.length > 0) throw new Error("--pg-embeddings and --wide are separate scenarios: pass one")
// a link to the provider: each upload read at this many MB/s (the OpenAI emulator's `uploadBytesPerSecond`)
const uploadMbps = values["upload-mbps"] === undefined ? undefined : Number(values["upload-mbps"])
if (uploadMbps !== undefined && !(uploadMbps > 0)) throw new Error(`--upload-mbps must be a positive number, got "${values["upload-mbps"]}"`)
if (uploadMbps !== undefined && providers.some((p) => p !== "openai")) {
  throw new Error(`--upload-mbps throttles the OpenAI emulator's uploads only: add --providers openai`)
}
const pgUrl = pgEmbeddings ? values["pg-url"] ?? process.env.OFFPEAK_TEST_PG_URL : undefined
if (pgEmbeddings && (pgUrl === undefined || pgUrl === "")) {
  console.error(
    "--pg-embeddings needs a PostgreSQL database it may create the schema offpeak_bench_pg in: pass --pg-url " +
      "postgres://user@host:port/db or set OFFPEAK_TEST_PG_URL (e.g. `eval \"$(scripts/postgres.sh env)\"`)"
  )
  process.exit(2)
}
const PgDb = pgEmbeddings ? await import("./pg-embeddings-db.ts") : undefined
const PgEmbeddings = pgEmbeddings ? await import("./pg-embeddings.ts") : undefined

interface Scenario {
  /** the table's rows column */
  readonly label: string
  /** progress lines and messages */
  readonly name: string
  readonly rows: number
  readonly maxRequests: number
  readonly inFlight: number
  /** the wide-rows scenario: bytes of text per row */
  readonly width?: number
  /** the Postgres → embeddings → Postgres scenario */
  readonly pg?: true
}
const LATENCY_ROWS = 50_000
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
const kb = (bytes: number) => `${fmt(bytes / 1000)} KB`
const scenarios: Array<Scenario> = widths.length > 0
  ? widths.flatMap((width) =>
    sizes.map((rows) => ({
      label: `${fmt(rows)} × ${kb(width)}`,
      name: `${fmt(rows)} rows of ${kb(width)}`,
      rows,
      maxRequests,
      inFlight,
      width
    }))
  )
  : pgEmbeddings
  ? sizes.map((rows) => ({ label: fmt(rows), name: `${fmt(rows)} rows, Postgres → embeddings → Postgres`, rows, maxRequests, inFlight, pg: true }))
  : sizes.map((rows) => ({ label: fmt(rows), name: `${fmt(rows)} rows`, rows, maxRequests, inFlight }))
if (widths.length === 0 && !pgEmbeddings && (values.latency || sizesFlag === undefined)) {
  scenarios.push({
    label: `${fmt(LATENCY_ROWS)}, one batch`,
    name: `${fmt(LATENCY_ROWS)} rows as one batch`,
    rows: LATENCY_ROWS,
    maxRequests: LATENCY_ROWS,
    inFlight: 1
  })
}

const data = path.join(repo, "bench/.data")
fs.mkdirSync(data, { recursive: true })
const command = ["node", "bench/run.ts", ...process.argv.slice(2)].join(" ")

// ===== child processes =====

const children = new Set<ChildProcess>()
process.on("exit", () => children.forEach((child) => child.kill("SIGKILL")))
process.on("SIGINT", () => process.exit(130))

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode)
    else child.once("exit", (code) => resolve(code))
  })

/**
 * Runs a bench script (offpeak's side or a baseline) as the offpeak binary runs: its Node flags and its two malloc
 * arenas; resolves to the JSON line it printed last.
 */
const runScript = async (args: ReadonlyArray<string>): Promise<Record<string, number>> => {
  const child = spawn(process.execPath, ["--max-semi-space-size=8", ...args], {
    cwd: repo,
    env: { ...process.env, MALLOC_ARENA_MAX: "2" },
    stdio: ["ignore", "pipe", "inherit"]
  })
  children.add(child)
  let out = ""
  child.stdout!.on("data", (d) => (out += d))
  const code = await exited(child)
  children.delete(child)
  if (code !== 0) throw new Error(`${args.join(" ")} exited ${code}`)
  return JSON.parse(out.trim().split("\n").at(-1)!)
}

const KNOBS: Record<ProviderName, object> = {
  openai: { linesPerSecond: 1e9, validationMs: 0, finalizingMs: 0 },
  anthropic: { linesPerSecond: 1e9 },
  gemini: { linesPerSecond: 1e9, pendingMs: 0 }
}

/** `offpeak emulator <provider>` answering as fast as it can, its finished-batch log at `log` */
const startEmulator = async (provider: ProviderName, dir: string, log: string) => {
  const knobs = JSON.stringify({
    ...KNOBS[provider],
    ...(uploadMbps !== undefined ? { uploadBytesPerSecond: uploadMbps * 1_000_000 } : {}),
    finishedLog: log
  })
  const child = spawn(process.execPath, [bin, "emulator", provider, "--dir", dir, "--knobs", knobs], {
    cwd: repo,
    stdio: ["ignore", "pipe", "inherit"]
  })
  children.add(child)
  const stop = async () => {
    child.kill()
    await exited(child)
    children.delete(child)
  }
  const url = await new Promise<string>((resolve, reject) => {
    let out = ""
    child.stdout!.on("data", (d) => {
      out += d
      const match = /http:\/\/\S+/.exec(out)
      if (match) resolve(match[0])
    })
    child.once("exit", (code) => reject(new Error(`the ${provider} emulator exited ${code} before printing its URL`)))
  })
  return { url, stop }
}

// ===== checks =====

/** every input row (ids r000001 … as writeTickets makes them) exactly once, each with an answer */
const verify = async (files: ReadonlyArray<string>, rows: number, what: string) => {
  const seen = new Uint8Array(rows + 1)
  let count = 0
  for (const file of files) {
    for await (const line of readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity })) {
      if (line.length === 0) continue
      const row = JSON.parse(line) as { id?: unknown; output?: { category?: unknown } }
      const i = typeof row.id === "string" ? Number(row.id.slice(1)) : NaN
      if (!(i >= 1 && i <= rows) || row.id !== `r${String(i).padStart(6, "0")}`) {
        throw new Error(`${what}: unexpected row id ${JSON.stringify(row.id)} in ${file}`)
      }
      if (seen[i] === 1) throw new Error(`${what}: row ${row.id} written twice`)
      if (typeof row.output?.category !== "string") throw new Error(`${what}: row ${row.id} has no answer`)
      seen[i] = 1
      count++
    }
  }
  if (count !== rows) {
    const missing = seen.findIndex((s, i) => i > 0 && s === 0)
    throw new Error(`${what}: ${count} of ${rows} rows written, e.g. r${String(missing).padStart(6, "0")} is missing`)
  }
}

// ===== one side, one run =====

/** a line of the emulator's finished-batch log (packages/providers/local/internal/finishedLog.ts) */
type Logged =
  | { readonly id: string; readonly requests: number; readonly endedAtMs: number; readonly inputBytes: number; readonly outputBytes: number }
  | { readonly id: string; readonly seenAtMs: number }

interface Measure {
  readonly seconds: number
  readonly rowsPerSecond: number
  /** user + system CPU seconds of the side's process (all its threads, loading included) */
  readonly cpuSeconds: number
  /** the part of cpuSeconds spent before the side's clock started (loading the modules) */
  readonly loadCpuSeconds: number
  /** cpuSeconds per 1,000 input rows */
  readonly cpuPer1kRows: number
  readonly maxRssMb: number
  /** requests of each batch the emulator finished, in order of completion */
  readonly batches: ReadonlyArray<number>
  readonly inputBytes: number
  readonly outputBytes: number
  readonly sentMBps: number
  readonly parsedMBps: number
  readonly commitAfterCompleteMs: number
  /** from the first poll that saw the last batch ended to the last row committed */
  readonly commitAfterSeenMs: number
  /** offpeak's side: CPU seconds by thread name at the run's end (MainThread, offpeak-sqlite, V8Worker, …) */
  readonly threadCpuSeconds?: Readonly<Record<string, number>> | undefined
}

type Side = "baseline" | "offpeak"

const inputFor = async (scenario: Scenario) => {
  const { rows, width } = scenario
  if (width !== undefined) {
    const file = Wide.inputPath(data, rows, width)
    // the input, plus the run's copies: offpeak's ledger (records), batch files, the emulator's uploads
    const expected = (fs.existsSync(file) ? 0 : rows * (width + 12)) + 3 * rows * (width + 12)
    const free = fs.statfsSync(data).bavail * fs.statfsSync(data).bsize
    if (free < expected) {
      throw new Error(`${scenario.name}: ${fmt(free / 1e9, 1)} GB free in ${data}, ~${fmt(expected / 1e9, 1)} GB needed (input and run)`)
    }
    if (!fs.existsSync(file)) {
      process.stderr.write(`generating ${file} (~${fmt((rows * width) / 1e9, 2)} GB)\n`)
      const started = performance.now()
      const bytes = await Wide.writeWide(file, rows, width)
      process.stderr.write(`  ${fmt(bytes / 1e9, 2)} GB in ${fmt((performance.now() - started) / 1000, 1)} s\n`)
    }
    return file
  }
  const file = path.join(data, `tickets-${rows}.csv`)
  if (!fs.existsSync(file)) {
    process.stderr.write(`generating ${file}\n`)
    writeTickets(file, rows, 42)
  }
  return file
}

const partFiles = (dir: string) =>
  fs.readdirSync(dir).filter((f) => f.startsWith("part-") && f.endsWith(".jsonl")).map((f) => path.join(dir, f))

/** the last write of the sink: its newest file (part file or manifest) */
const lastWriteMs = (dir: string) =>
  Math.max(...fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => fs.statSync(path.join(dir, e.name)).mtimeMs))

/** the vector column type of the Postgres scenario's targets (pgvector or not), set when the source is seeded */
let vectorType: "vector" | "real[]" = "vector"

/** runs one side of the Postgres scenario into a fresh target table and checks it; the report and its last commit */
const runPgSide = async (side: Side, scenario: Scenario, work: string, url: string, what: string) => {
  const table = `embeddings_${side}`
  await PgDb!.resetTarget(pgUrl!, table, vectorType, PgEmbeddings!.DIMENSIONS)
  const common = [
    "--url", url,
    "--max-requests", String(scenario.maxRequests),
    "--in-flight", String(scenario.inFlight),
    "--dimensions", String(PgEmbeddings!.DIMENSIONS)
  ]
  const report = side === "baseline"
    ? await runScript([
      "bench/baseline-pg-embeddings.ts", ...common, "--pg-url", pgUrl!, "--table", table, "--vector-type", vectorType,
      "--work", path.join(work, "batches")
    ])
    : await runScript([
      "bench/offpeak.ts", "--provider", "openai", "--pg-embeddings", ...common, "--pg-url", pgUrl!, "--pg-table", table,
      "--out", path.join(work, "offpeak"), "--state", path.join(work, "state")
    ])
  if ((report.failed ?? 0) !== 0) throw new Error(`${what}: ${report.failed} rows failed (see ${work}/offpeak/dead-letter)`)
  await PgDb!.verifyTarget(pgUrl!, table, vectorType, scenario.rows, PgEmbeddings!.DIMENSIONS, what)
  if (!(report.lastWriteMs! > 0)) throw new Error(`${what}: the side reported no sink write (${JSON.stringify(report)})`)
  return { report, lastCommitMs: report.lastWriteMs! }
}

const runSide = async (provider: ProviderName, side: Side, scenario: Scenario): Promise<Measure> => {
  const input = scenario.pg ? "" : await inputFor(scenario)
  const work = fs.mkdtempSync(path.join(data, `run-${provider}-${side}-`))
  try {
    const log = path.join(work, "finished.jsonl")
    const emulator = await startEmulator(provider, path.join(work, "emulator"), log)
    let report: Record<string, number>
    let lastCommitMs: number
    const what = `${provider} ${side} (${scenario.name})`
    try {
      if (scenario.pg) {
        ;({ report, lastCommitMs } = await runPgSide(side, scenario, work, emulator.url, what))
      } else {
        const common = [
          "--input", input,
          "--url", emulator.url,
          "--max-requests", String(scenario.maxRequests),
          "--in-flight", String(scenario.inFlight),
          ...(scenario.width === undefined ? [] : ["--wide"])
        ]
        if (side === "baseline") {
          const out = path.join(work, "baseline.jsonl")
          const extra = provider === "anthropic" ? [] : ["--work", path.join(work, "batches")]
          report = await runScript([`bench/baseline-${provider}.ts`, ...common, "--out", out, ...extra])
          await verify([out], scenario.rows, what)
          lastCommitMs = report.endedAtMs!
        } else {
          const out = path.join(work, "offpeak")
          const samples = values["sample-memory"]
            ? path.join(data, `memory-${provider}-${scenario.label.replace(/[^0-9A-Za-z]+/g, "-")}.jsonl`)
            : undefined
          if (samples !== undefined) fs.rmSync(samples, { force: true })
          report = await runScript([
            "bench/offpeak.ts", "--provider", provider, ...common, "--out", out, "--state", path.join(work, "state"),
            ...(samples === undefined ? [] : ["--sample-memory", samples])
          ])
          if (samples !== undefined && fs.existsSync(samples)) {
            const peak = { heapUsed: 0, external: 0, arrayBuffers: 0 }
            for (const line of fs.readFileSync(samples, "utf8").split("\n").filter((l) => l.length > 0)) {
              const m = JSON.parse(line) as typeof peak
              for (const k of Object.keys(peak) as Array<keyof typeof peak>) peak[k] = Math.max(peak[k], m[k])
            }
            process.stderr.write(`  memory samples: ${path.relative(repo, samples)}; peak heapUsed ${peak.heapUsed} MB, external ${peak.external} MB, arrayBuffers ${peak.arrayBuffers} MB\n`)
          }
          if (report.failed !== 0) throw new Error(`${what}: ${report.failed} rows failed (see ${out}/dead-letter)`)
          await verify(partFiles(out), scenario.rows, what)
          lastCommitMs = lastWriteMs(out)
        }
      }
    } finally {
      await emulator.stop()
    }
    const logged = fs.existsSync(log)
      ? fs.readFileSync(log, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l) as Logged)
      : []
    const finished = logged.flatMap((l) => ("endedAtMs" in l ? [l] : []))
    const seen = logged.flatMap((l) => ("seenAtMs" in l ? [l.seenAtMs] : []))
    if (finished.length === 0 || seen.length !== finished.length) {
      throw new Error(`${what}: the emulator logged ${finished.length} finished batches, ${seen.length} seen ended`)
    }
    const seconds = report.seconds!
    const cpuSeconds = report.cpuSeconds!
    if (!(cpuSeconds > 0)) throw new Error(`${what}: the side reported no CPU time (${JSON.stringify(report)})`)
    const inputBytes = finished.reduce((n, b) => n + b.inputBytes, 0)
    const outputBytes = finished.reduce((n, b) => n + b.outputBytes, 0)
    const measure: Measure = {
      seconds,
      rowsPerSecond: scenario.rows / seconds,
      cpuSeconds,
      loadCpuSeconds: report.loadCpuSeconds!,
      cpuPer1kRows: cpuSeconds / (scenario.rows / 1000),
      maxRssMb: report.maxRssMb!,
      batches: finished.map((b) => b.requests),
      inputBytes,
      outputBytes,
      sentMBps: inputBytes / 1e6 / seconds,
      parsedMBps: outputBytes / 1e6 / seconds,
      commitAfterCompleteMs: lastCommitMs - Math.max(...finished.map((b) => b.endedAtMs)),
      commitAfterSeenMs: lastCommitMs - Math.max(...seen),
      threadCpuSeconds: (report as unknown as { readonly threadCpuSeconds?: Record<string, number> }).threadCpuSeconds
    }
    const threads = Object.entries(measure.threadCpuSeconds ?? {}).filter(([, s]) => s >= 0.01).sort((a, b) => b[1] - a[1])
    process.stderr.write(
      `  ${what}: ${fmt(seconds, 2)} s, ${fmt(measure.rowsPerSecond)} rows/s, ` +
        `CPU ${fmt(cpuSeconds, 2)} s (${fmt(measure.loadCpuSeconds, 2)} s loading, ${fmt(measure.cpuPer1kRows, 3)} s / 1k rows), ${fmt(measure.maxRssMb)} MB, ` +
        `${finished.length} batches, commit-after-complete ${fmt(measure.commitAfterCompleteMs)} ms ` +
        `(after seen ${fmt(measure.commitAfterSeenMs)} ms)` +
        (threads.length > 0 ? `; CPU by thread: ${threads.map(([name, s]) => `${name} ${fmt(s, 2)} s`).join(", ")}` : "") + "\n"
    )
    return measure
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

// ===== the runs =====

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}
const summarize = (ms: ReadonlyArray<Measure>) => ({
  seconds: median(ms.map((m) => m.seconds)),
  rowsPerSecond: median(ms.map((m) => m.rowsPerSecond)),
  cpuSeconds: median(ms.map((m) => m.cpuSeconds)),
  loadCpuSeconds: median(ms.map((m) => m.loadCpuSeconds)),
  cpuPer1kRows: median(ms.map((m) => m.cpuPer1kRows)),
  maxRssMb: median(ms.map((m) => m.maxRssMb)),
  batches: ms[0]!.batches.length,
  sentMBps: median(ms.map((m) => m.sentMBps)),
  parsedMBps: median(ms.map((m) => m.parsedMBps)),
  commitAfterCompleteMs: median(ms.map((m) => m.commitAfterCompleteMs)),
  commitAfterSeenMs: median(ms.map((m) => m.commitAfterSeenMs))
})
type Summary = ReturnType<typeof summarize>

interface Outcome {
  readonly provider: ProviderName
  readonly scenario: Scenario
  readonly runs: Record<Side, Array<Measure>>
  readonly median: Record<Side, Summary>
  readonly ratio: { readonly rowsPerSecond: number; readonly cpuPer1kRows: number; readonly maxRssMb: number }
  readonly warnings: ReadonlyArray<string>
}

const startedAt = new Date()
const outcomes: Array<Outcome> = []
for (const provider of providers) {
  for (const scenario of scenarios) {
    process.stderr.write(`${provider}, ${scenario.name}: batches of ${fmt(scenario.maxRequests)}, ${scenario.inFlight} in flight\n`)
    if (scenario.pg) {
      const started = performance.now()
      const seeded = await PgDb!.seed(pgUrl!, scenario.rows)
      vectorType = seeded.vectorType
      process.stderr.write(
        `  seeded ${PgEmbeddings!.SCHEMA}.${PgEmbeddings!.SOURCE_TABLE}: ${fmt(scenario.rows)} rows, ${fmt(seeded.bytes / 1e6, 1)} MB of text, ` +
          `in ${fmt((performance.now() - started) / 1000, 1)} s; target vectors as ${vectorType === "vector" ? `vector(${PgEmbeddings!.DIMENSIONS})` : "real[] (pgvector is not installed in that server)"}\n`
      )
    }
    const runs: Record<Side, Array<Measure>> = { baseline: [], offpeak: [] }
    for (let i = 0; i < repeat; i++) {
      for (const side of ["baseline", "offpeak"] as const) runs[side].push(await runSide(provider, side, scenario))
    }
    const sizesOf = (m: Measure) => [...m.batches].sort((a, b) => a - b).join(",")
    const warnings = sizesOf(runs.baseline[0]!) === sizesOf(runs.offpeak[0]!)
      ? []
      : [`batch sizes differ: baseline ${sizesOf(runs.baseline[0]!)}, offpeak ${sizesOf(runs.offpeak[0]!)}`]
    const median = { baseline: summarize(runs.baseline), offpeak: summarize(runs.offpeak) }
    outcomes.push({
      provider,
      scenario,
      runs,
      median,
      ratio: {
        rowsPerSecond: median.offpeak.rowsPerSecond / median.baseline.rowsPerSecond,
        cpuPer1kRows: median.offpeak.cpuPer1kRows / median.baseline.cpuPer1kRows,
        maxRssMb: median.offpeak.maxRssMb / median.baseline.maxRssMb
      },
      warnings
    })
  }
}

// ===== report =====

const both = (o: Outcome, f: (s: Summary) => string) => `${f(o.median.baseline)} / ${f(o.median.offpeak)}`
const cpus = os.cpus()
const machine = `${cpus.length} × ${cpus[0]?.model ?? "unknown CPU"}, ${fmt(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`
const lines = [
  "",
  `\`${command}\``,
  "",
  `${machine}; ${startedAt.toISOString()}; ${repeat} run(s) per side, medians; every side run against its own emulator process.`,
  "Columns with two values are baseline / offpeak. CPU: user + system seconds of the side's whole process (every thread, loading included) per 1,000 rows;",
  "the emulator's CPU is not counted. Sent and parsed: the batches' request and result bytes over the run's seconds.",
  "Commit-after-complete: from the last batch's results being ready at the emulator to the last row committed in the sink;",
  "commit-after-seen: from the first poll that saw the last batch ended (polls: 100 ms growing to 1 s on both sides, every 100 ms while an OpenAI batch is finalizing)."
]
for (const provider of providers) {
  lines.push(
    "",
    pgEmbeddings
      ? `### ${provider}: Postgres → embeddings (${PgEmbeddings!.MODEL}, ${PgEmbeddings!.DIMENSIONS} dimensions) → Postgres (${vectorType === "vector" ? `vector(${PgEmbeddings!.DIMENSIONS})` : "real[], no pgvector"})`
      : `### ${provider}`,
    "",
    "| rows | batches × size, in flight | rows/s baseline | rows/s offpeak | offpeak/baseline | CPU s / 1k rows | CPU offpeak/baseline | peak RSS MB | sent MB/s | parsed MB/s | commit-after-complete ms | commit-after-seen ms |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  )
  for (const o of outcomes.filter((o) => o.provider === provider)) {
    const batches = o.median.baseline.batches === o.median.offpeak.batches
      ? `${o.median.offpeak.batches}`
      : both(o, (s) => `${s.batches}`)
    lines.push(
      `| ${o.scenario.label} | ${batches} × ≤${fmt(o.scenario.maxRequests)}, ${o.scenario.inFlight} | ` +
        `${fmt(o.median.baseline.rowsPerSecond)} | ${fmt(o.median.offpeak.rowsPerSecond)} | ${fmt(o.ratio.rowsPerSecond, 2)} | ` +
        `${both(o, (s) => fmt(s.cpuPer1kRows, 3))} | ${fmt(o.ratio.cpuPer1kRows, 2)} | ` +
        `${both(o, (s) => fmt(s.maxRssMb))} | ${both(o, (s) => fmt(s.sentMBps, 1))} | ${both(o, (s) => fmt(s.parsedMBps, 1))} | ` +
        `${both(o, (s) => fmt(s.commitAfterCompleteMs))} | ${both(o, (s) => fmt(s.commitAfterSeenMs))} |`
    )
  }
}
const warnings = outcomes.flatMap((o) => o.warnings.map((w) => `${o.provider}, ${o.scenario.name}: ${w}`))
if (warnings.length > 0) lines.push("", ...warnings.map((w) => `warning: ${w}`))

const over = maxRssMb === undefined ? [] : outcomes.filter((o) => o.median.offpeak.maxRssMb > maxRssMb)
console.log(lines.join("\n"))
const jsonFile = path.join(data, "last-run.json")
fs.writeFileSync(
  jsonFile,
  JSON.stringify(
    {
      command,
      startedAt: startedAt.toISOString(),
      machine: { cpus: cpus.length, cpu: cpus[0]?.model, memoryBytes: os.totalmem(), node: process.version, platform: process.platform },
      options: {
        providers,
        sizes,
        widths,
        repeat,
        maxRequests,
        inFlight,
        latencyRows: LATENCY_ROWS,
        maxRssMb,
        ...(uploadMbps !== undefined ? { uploadMbps } : {}),
        ...(pgEmbeddings ? { pgEmbeddings: { model: PgEmbeddings!.MODEL, dimensions: PgEmbeddings!.DIMENSIONS, vectorType } } : {})
      },
      results: outcomes,
      maxRss: maxRssMb === undefined ? null : { limitMb: maxRssMb, ok: over.length === 0 }
    },
    null,
    2
  ) + "\n"
)
console.log(`\nJSON: ${path.relative(repo, jsonFile)}`)
if (over.length > 0) {
  for (const o of over) {
    console.error(
      `offpeak's median peak RSS ${fmt(o.median.offpeak.maxRssMb)} MB (${o.provider}, ${o.scenario.name}) exceeds --max-rss-mb ${maxRssMb}`
    )
  }
  process.exitCode = 1
}

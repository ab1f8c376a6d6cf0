/**
 * offpeak's side of the benchmark: the CSV → batch API → JSONL pipeline of
 * test/fixtures/tickets.pipeline.ts, run in this process against the emulator
 * at --url (OpenAI, Anthropic or Gemini, through the real adapters and their
 * official SDKs), with a SQLite ledger in --state. Batches close on size only
 * (no time-based flush), so they are the same as the baseline's.
 *
 *   node --max-semi-space-size=8 bench/offpeak.ts --provider openai|anthropic|gemini \
 *     --input x.csv --out dir --url http://127.0.0.1:PORT[/v1] --state dir [--max-requests 10000] [--in-flight 3] [--wide] [--max-bytes N]
 *
 * With --pg-embeddings the pipeline is bench/pg-embeddings.ts's instead (Postgres source → OpenAI embeddings →
 * Postgres sink into --pg-table of the database at --pg-url, --dimensions, dead letter in --out; no --input), and
 * the JSON line also has lastWriteMs: epoch ms when the sink's last write (its transaction) returned.
 *
 * With --wide the pipeline is bench/wide.ts's (rows of wide text, a two-field label of at most 20 tokens, rows
 * `{ id, output }` in the sink) instead of the fixture's; --max-bytes sets the pipeline's batch.maxBytes (else the
 * provider's limit). --sample-memory FILE appends process.memoryUsage() (MB),
 * the anonymous and file-backed parts of the RSS, and (every 2 s, from a diagnostic report) the heaps of worker threads
 * every 250 ms to FILE as JSON lines, to see where a peak is. --timeline FILE writes each run event with its epoch ms
 * (`atMs`) to FILE as JSON lines when the run ends.
 *
 * Prints one JSON line: rows, succeeded, failed, batches, seconds (from
 * reading the source to the run's end), maxRssMb, endedAtMs (epoch ms when
 * Pipeline.run returned), cpuSeconds (user + system CPU of this process, every
 * thread — SQLite's worker too — loading and the ledger's close included) and
 * loadCpuSeconds (the part spent before the clock started), and threadCpuSeconds
 * (CPU seconds by thread name when the run ended, before the ledger closed: MainThread, offpeak-sqlite, V8Worker, …;
 * empty off Linux). bench/run.ts starts
 * it; it is not meant to be run by hand.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as Fixture from "../test/fixtures/tickets.pipeline.ts"
import * as Wide from "./wide.ts"

const { values } = parseArgs({
  options: {
    provider: { type: "string", default: "openai" },
    input: { type: "string" },
    out: { type: "string" },
    url: { type: "string" },
    state: { type: "string" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" },
    wide: { type: "boolean", default: false },
    "max-bytes": { type: "string" },
    "sample-memory": { type: "string" },
    timeline: { type: "string" },
    "pg-embeddings": { type: "boolean", default: false },
    "pg-url": { type: "string" },
    "pg-table": { type: "string" },
    dimensions: { type: "string" }
  }
})
fs.mkdirSync(values.state!, { recursive: true })
// as `offpeak run` does: the ledger's SQLite thread starts while the rest loads (here the provider's SDK, below)
SqliteClient.prewarm()
const options = {
  input: values.input!,
  out: values.out!,
  maxRequests: Number(values["max-requests"]),
  maxInFlight: Number(values["in-flight"]),
  maxBytes: values["max-bytes"] === undefined ? undefined : Number(values["max-bytes"])
}
// the time the Postgres sink's last write returned (its transaction committed), for commit-after-complete
let lastWriteMs = 0
const pgPipeline = async () => {
  // loaded only here: the other scenarios do not load the Postgres connector
  const PgEmbeddings = await import("./pg-embeddings.ts")
  const p = PgEmbeddings.make({
    url: values["pg-url"]!,
    table: values["pg-table"]!,
    deadLetter: path.join(values.out!, "dead-letter"),
    dimensions: values.dimensions === undefined ? undefined : Number(values.dimensions),
    maxRequests: options.maxRequests,
    maxInFlight: options.maxInFlight
  })
  const { sink } = p
  return Pipeline.make({
    ...p,
    sink: { ...sink, write: (part, rows) => sink.write(part, rows).pipe(Effect.tap(() => Effect.sync(() => (lastWriteMs = Date.now())))) }
  })
}
const csvPipeline = () => {
  const fixture = Fixture.make(options)
  // the fixture flushes a batch open for 2 s; the baseline has no such rule, so batches close on size only here
  return Pipeline.make({ ...fixture, batch: { ...fixture.batch, flushAfter: "1 hour" } })
}
const pipeline: Pipeline.Pipeline<any, any, any> = values["pg-embeddings"]
  ? await pgPipeline()
  : values.wide
  ? Wide.make(options)
  : csvPipeline()

// --sample-memory FILE: process.memoryUsage() every 250 ms as JSON lines (where the memory is: heap, external, array buffers)
if (values["sample-memory"] !== undefined) {
  const file = values["sample-memory"]
  const t0 = performance.now()
  const mb = (n: number) => Math.round(n / 1048576)
  // the resident set split into anonymous memory and mapped files (the node binary, SQLite's files)
  const status = () => {
    const text = fs.readFileSync("/proc/self/status", "utf8")
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN)
    return { rssAnon: Math.round(kb("RssAnon") / 1024), rssFile: Math.round(kb("RssFile") / 1024) }
  }
  // the heaps of worker threads (SQLite's) are not in process.memoryUsage(): every 2 s from a diagnostic report
  let workers = { workerHeapUsed: 0, workerHeapTotal: 0 }
  let ticks = 0
  const timer = setInterval(() => {
    if (ticks++ % 8 === 0) {
      const report = process.report.getReport() as { workers?: Array<{ javascriptHeap?: { usedMemory: number; totalMemory: number } }> }
      workers = { workerHeapUsed: 0, workerHeapTotal: 0 }
      for (const w of report.workers ?? []) {
        workers.workerHeapUsed += mb(w.javascriptHeap?.usedMemory ?? 0)
        workers.workerHeapTotal += mb(w.javascriptHeap?.totalMemory ?? 0)
      }
    }
    const m = process.memoryUsage()
    fs.appendFileSync(
      file,
      JSON.stringify({
        s: Math.round(performance.now() - t0) / 1000,
        rss: mb(m.rss),
        ...status(),
        heapUsed: mb(m.heapUsed),
        heapTotal: mb(m.heapTotal),
        external: mb(m.external),
        arrayBuffers: mb(m.arrayBuffers),
        ...workers
      }) + "\n"
    )
  }, 250)
  timer.unref()
}

// as the CLI's plugins build the adapters against an emulator (ProviderPlugin.make)
const adapter = {
  apiKey: Redacted.make("bench"),
  baseURL: values.url!,
  pollInterval: { initial: "100 millis", max: "1 second" }
} as const
// only the adapter in use is loaded (its own entry point: the package's index also loads the emulator and CLI plugin)
const provider = values.provider === "anthropic"
  ? (await import("@offpeak/providers/anthropic/AnthropicBatch")).layer(adapter)
  : values.provider === "openai"
  ? (await import("@offpeak/providers/openai/OpenAiBatch")).layer(adapter)
  : values.provider === "gemini"
  ? (await import("@offpeak/providers/google/GeminiBatch")).layer(adapter)
  : undefined
if (provider === undefined) throw new Error(`unknown --provider ${values.provider}`)

const layer = Layer.mergeAll(
  provider,
  Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(values.state!, "state.db") })))
)
const cpuNow = () => {
  const u = process.resourceUsage()
  return (u.userCPUTime + u.systemCPUTime) / 1e6
}
// --timeline FILE: each run event's tag and epoch ms, one JSON line each, to see where a run's time goes
const timelineLines: Array<string> = []
const timeline = values.timeline === undefined
  ? undefined
  : (event: { readonly _tag: string }) => {
    timelineLines.push(JSON.stringify({ atMs: Date.now(), ...event }))
  }
/**
 * CPU seconds of each of this process's live threads by name (Linux, /proc): the pipeline's thread ("MainThread"),
 * the SQLite worker ("offpeak-sqlite"), V8's GC and compiler helpers ("V8Worker"), libuv's pool ("libuv-worker")
 */
const threadCpu = (): Record<string, number> => {
  const out: Record<string, number> = {}
  try {
    for (const task of fs.readdirSync("/proc/self/task")) {
      const stat = fs.readFileSync(`/proc/self/task/${task}/stat`, "utf8")
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"))
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      // utime and stime, in clock ticks (100 a second on Linux)
      out[name] = (out[name] ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100
    }
  } catch {
    // not Linux: no split
  }
  return out
}
const loadCpuSeconds = cpuNow()
const started = performance.now()
// the end is taken when Pipeline.run returns, before the layer closes the ledger (its last checkpoint is not part of it)
const { summary, endedAtMs, seconds, threads } = await Effect.runPromise(
  Pipeline.run(pipeline, { stateDir: values.state!, onEvent: timeline }).pipe(
    // the threads are read before the layer closes the ledger (its worker's CPU is not in /proc once it exits)
    Effect.map((summary) => ({ summary, endedAtMs: Date.now(), seconds: (performance.now() - started) / 1000, threads: threadCpu() })),
    Effect.provide(layer)
  )
)
if (values.timeline !== undefined) fs.writeFileSync(values.timeline, timelineLines.join("\n") + "\n")
process.stdout.write(
  JSON.stringify({
    rows: summary.rows,
    succeeded: summary.succeeded,
    failed: summary.failed,
    batches: summary.batches,
    seconds,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    endedAtMs,
    lastWriteMs,
    cpuSeconds: cpuNow(),
    loadCpuSeconds,
    threadCpuSeconds: threads
  }) + "\n"
)

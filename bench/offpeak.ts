/**
 * offpeak's side of the benchmark: the CSV → OpenAI Batch → JSONL pipeline of
 * test/fixtures/tickets.pipeline.ts, run in this process against the emulator
 * at --url, with a SQLite ledger in --state.
 *
 *   node bench/offpeak.ts --input x.csv --out dir --url http://127.0.0.1:PORT/v1 --state dir
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { OpenAiBatch } from "@offpeak/providers/openai"
import { Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as Fixture from "../test/fixtures/tickets.pipeline.ts"

const { values } = parseArgs({
  options: {
    input: { type: "string" },
    out: { type: "string" },
    url: { type: "string" },
    state: { type: "string" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" }
  }
})
fs.mkdirSync(values.state!, { recursive: true })
const pipeline = Fixture.make({
  input: values.input!,
  out: values.out!,
  maxRequests: Number(values["max-requests"]),
  maxInFlight: Number(values["in-flight"])
})
const layer = Layer.mergeAll(
  OpenAiBatch.layer({
    apiKey: Redacted.make("bench"),
    baseURL: values.url!,
    pollInterval: { initial: "100 millis", max: "1 second" }
  }),
  Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(values.state!, "state.db") })))
)
const started = performance.now()
const summary = await Effect.runPromise(Pipeline.run(pipeline, { stateDir: values.state! }).pipe(Effect.provide(layer)))
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  JSON.stringify({ rows: summary.rows, succeeded: summary.succeeded, seconds, maxRssMb: process.resourceUsage().maxRSS / 1024 }) + "\n"
)

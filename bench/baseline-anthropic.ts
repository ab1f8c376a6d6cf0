/**
 * The hand-written Anthropic baseline: the same job as bench/offpeak.ts --provider anthropic
 * with no framework. Reads the CSV (papaparse), sends batches of --max-requests inline
 * requests with the official @anthropic-ai/sdk (`messages.batches.create`, at most
 * --in-flight at once), polls `retrieve` (100 ms growing to 1 s, as offpeak) until the
 * batch has ended, streams `results()`, joins by custom_id and writes one JSONL file.
 * Each request is what offpeak's adapter renders: same model, system prompt, user text,
 * max_tokens, and the output schema as one forced tool (`label`), with the row id as
 * custom_id. No ledger, no resume, no retries, no dedupe: the floor offpeak is measured against.
 *
 *   node --max-semi-space-size=8 bench/baseline-anthropic.ts --input x.csv --out out.jsonl \
 *     --url http://127.0.0.1:PORT [--max-requests 10000] [--in-flight 3]
 *
 * Prints one JSON line: rows, seconds, maxRssMb, endedAtMs (epoch ms once the output file
 * is closed), cpuSeconds (user + system CPU of this process, loading included) and
 * loadCpuSeconds (the part spent before the clock started). bench/run.ts starts it.
 */
import Anthropic from "@anthropic-ai/sdk"
import type { MessageBatch } from "@anthropic-ai/sdk/resources/messages/batches"
import type { MessageCreateParamsNonStreaming } from "@anthropic-ai/sdk/resources/messages/messages"
import * as fs from "node:fs"
import { parseArgs } from "node:util"
import Papa from "papaparse"

const cpuNow = () => {
  const u = process.resourceUsage()
  return (u.userCPUTime + u.systemCPUTime) / 1e6
}
const loadCpuSeconds = cpuNow()

const { values } = parseArgs({
  options: {
    input: { type: "string" },
    out: { type: "string" },
    url: { type: "string" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" }
  }
})
const maxRequests = Number(values["max-requests"])
const inFlight = Number(values["in-flight"])
const client = new Anthropic({ apiKey: "bench", baseURL: values.url!, maxRetries: 3 })

// the tool a hand-written script would paste in (the shape offpeak renders from the pipeline's Label schema)
const tool = {
  name: "label",
  description: "Answer with the label object.",
  input_schema: {
    type: "object" as const,
    properties: {
      category: { type: "string", enum: ["billing", "bug", "account", "feature", "shipping", "other"] },
      urgent: { type: "boolean" },
      summary: { type: "string" }
    },
    required: ["category", "urgent", "summary"],
    additionalProperties: false,
    title: "Label"
  }
}

interface Request {
  readonly custom_id: string
  readonly params: MessageCreateParamsNonStreaming
}

const started = performance.now()
const output = fs.createWriteStream(values.out!)
let rows = 0
const running = new Set<Promise<void>>()

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const runBatch = async (requests: Array<Request>, texts: Map<string, string>) => {
  let batch: MessageBatch = await client.messages.batches.create({ requests })
  for (let delay = 100; batch.processing_status !== "ended"; delay = Math.min(1000, delay * 1.5)) {
    await sleep(delay)
    batch = await client.messages.batches.retrieve(batch.id)
  }
  let out = ""
  for await (const line of await client.messages.batches.results(batch.id)) {
    if (line.result.type !== "succeeded") continue
    const answer = line.result.message.content.find((block) => block.type === "tool_use")
    out += JSON.stringify({ id: line.custom_id, text: texts.get(line.custom_id), output: answer?.input }) + "\n"
  }
  output.write(out)
}

const submit = async (requests: Array<Request>, texts: Map<string, string>) => {
  while (running.size >= inFlight) await Promise.race(running)
  const p = runBatch(requests, texts).finally(() => running.delete(p))
  running.add(p)
}

let requests: Array<Request> = []
let texts = new Map<string, string>()
const parser = fs.createReadStream(values.input!).pipe(Papa.parse(Papa.NODE_STREAM_INPUT, { header: true }))
for await (const row of parser as AsyncIterable<{ id: string; text: string }>) {
  rows++
  requests.push({
    custom_id: row.id,
    params: {
      model: "claude-haiku-4-5",
      max_tokens: 400,
      messages: [{ role: "user", content: row.text }],
      system: "Label the ticket.",
      tools: [tool],
      tool_choice: { type: "tool", name: "label" }
    }
  })
  texts.set(row.id, row.text)
  if (requests.length >= maxRequests) {
    await submit(requests, texts)
    requests = []
    texts = new Map()
  }
}
if (requests.length > 0) await submit(requests, texts)
await Promise.all(running)
await new Promise((r) => output.end(r))
const endedAtMs = Date.now()
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  JSON.stringify({ rows, seconds, maxRssMb: process.resourceUsage().maxRSS / 1024, endedAtMs, cpuSeconds: cpuNow(), loadCpuSeconds }) + "\n"
)

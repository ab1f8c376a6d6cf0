/**
 * The hand-written OpenAI baseline: the same job as bench/offpeak.ts with no framework.
 * Reads the CSV (papaparse), writes batch JSONL files of --max-requests lines (and at most
 * 200 MiB, OpenAI's file limit; lines go to the file as they are made), uploads
 * them and creates batches with the official openai SDK (at most --in-flight at once),
 * polls (100 ms growing to 1 s, every 100 ms while finalizing, as offpeak), downloads and parses the output, joins by
 * custom_id and writes one JSONL file. The request lines are the ones offpeak's adapter
 * renders (same prompt, same strict json_schema), with the row id as custom_id.
 * No ledger, no resume, no retries, no dedupe: the floor offpeak is measured against.
 *
 *   node --max-semi-space-size=8 bench/baseline-openai.ts --input x.csv --out out.jsonl \
 *     --url http://127.0.0.1:PORT/v1 --work dir [--max-requests 10000] [--in-flight 3] [--wide]
 *
 * --wide: bench/wide.ts's scenario (a two-field label of at most 20 tokens; output rows `{ id, output }`, no text kept).
 *
 * Prints one JSON line: rows, seconds, maxRssMb, endedAtMs (epoch ms once the output file
 * is closed), cpuSeconds (user + system CPU of this process, loading included) and
 * loadCpuSeconds (the part spent before the clock started). bench/run.ts starts it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import OpenAI from "openai"
import Papa from "papaparse"
import * as Wide from "./wide.ts"

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
    work: { type: "string" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" },
    wide: { type: "boolean", default: false }
  }
})
const wide = values.wide
const maxRequests = Number(values["max-requests"])
const inFlight = Number(values["in-flight"])
const client = new OpenAI({ apiKey: "bench", baseURL: values.url!, maxRetries: 3 })
fs.mkdirSync(values.work!, { recursive: true })

// the JSON schema a hand-written script would paste in (same shape as the offpeak pipeline's Label)
const labelSchema = {
  type: "object",
  properties: {
    category: { type: "string", enum: ["billing", "bug", "account", "feature", "shipping", "other"] },
    urgent: { type: "boolean" },
    summary: { type: "string" }
  },
  required: ["category", "urgent", "summary"],
  additionalProperties: false,
  title: "Label"
}
const schema = wide ? Wide.shortLabelJsonSchema : labelSchema
const maxTokens = wide ? Wide.MAX_TOKENS : 400
/** OpenAI's batch input file limit */
const MAX_FILE_BYTES = 200 * 1024 * 1024

const started = performance.now()
const output = fs.createWriteStream(values.out!)
let rows = 0
let batchNo = 0
const running = new Set<Promise<void>>()

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const runBatch = async (file: string, texts: Map<string, string>) => {
  const uploaded = await client.files.create({ file: fs.createReadStream(file), purpose: "batch" })
  let batch = await client.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions", completion_window: "24h" })
  // 100 ms growing to 1 s, and 100 ms again while the batch is finalizing (offpeak's rule)
  for (let delay = 100; batch.status !== "completed" && batch.status !== "failed" && batch.status !== "expired" && batch.status !== "cancelled"; delay = batch.status === "finalizing" ? 100 : Math.min(1000, delay * 1.5)) {
    await sleep(delay)
    batch = await client.batches.retrieve(batch.id)
  }
  if (batch.output_file_id) {
    const text = await (await client.files.content(batch.output_file_id)).text()
    let out = ""
    for (const line of text.split("\n")) {
      if (line.length === 0) continue
      const result = JSON.parse(line)
      const content = result.response.body.choices[0].message.content
      out += JSON.stringify(
        wide
          ? { id: result.custom_id, output: JSON.parse(content) }
          : { id: result.custom_id, text: texts.get(result.custom_id), output: JSON.parse(content) }
      ) + "\n"
    }
    output.write(out)
  }
  fs.rmSync(file)
}

const submit = async (file: string, texts: Map<string, string>) => {
  while (running.size >= inFlight) await Promise.race(running)
  const p = runBatch(file, texts).finally(() => running.delete(p))
  running.add(p)
}

// the open batch: its file, written a MiB at a time
let file = ""
let fd = -1
let count = 0
let bytes = 0
let pending: Array<string> = []
let pendingBytes = 0
let texts = new Map<string, string>()
const flushPending = () => {
  if (pending.length > 0) fs.writeSync(fd, pending.join(""))
  pending = []
  pendingBytes = 0
}
const closeBatch = async () => {
  flushPending()
  fs.closeSync(fd)
  await submit(file, texts)
  fd = -1
  count = 0
  bytes = 0
  texts = new Map()
}
const parser = fs.createReadStream(values.input!).pipe(Papa.parse(Papa.NODE_STREAM_INPUT, { header: true }))
for await (const row of parser as AsyncIterable<{ id: string; text: string }>) {
  rows++
  const line = JSON.stringify({
    custom_id: row.id,
    method: "POST",
    url: "/v1/chat/completions",
    body: {
      model: "gpt-4o-mini",
      messages: [{ role: "system", content: "Label the ticket." }, { role: "user", content: row.text }],
      max_completion_tokens: maxTokens,
      temperature: 0,
      response_format: { type: "json_schema", json_schema: { name: "label", strict: true, schema } }
    }
  }) + "\n"
  const size = Buffer.byteLength(line)
  if (fd !== -1 && bytes + size > MAX_FILE_BYTES) await closeBatch()
  if (fd === -1) {
    file = path.join(values.work!, `batch-${++batchNo}.jsonl`)
    fd = fs.openSync(file, "w")
  }
  pending.push(line)
  pendingBytes += line.length
  if (pendingBytes >= 1 << 20) flushPending()
  count++
  bytes += size
  if (!wide) texts.set(row.id, row.text)
  if (count >= maxRequests) await closeBatch()
}
if (fd !== -1) await closeBatch()
await Promise.all(running)
await new Promise((r) => output.end(r))
const endedAtMs = Date.now()
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  JSON.stringify({ rows, seconds, maxRssMb: process.resourceUsage().maxRSS / 1024, endedAtMs, cpuSeconds: cpuNow(), loadCpuSeconds }) + "\n"
)

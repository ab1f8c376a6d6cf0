/**
 * The hand-written OpenAI baseline: the same job as bench/offpeak.ts with no framework.
 * Reads the CSV (papaparse), writes batch JSONL files of --max-requests lines, uploads
 * them and creates batches with the official openai SDK (at most --in-flight at once),
 * polls (100 ms growing to 1 s, every 100 ms while finalizing, as offpeak), downloads and parses the output, joins by
 * custom_id and writes one JSONL file. The request lines are the ones offpeak's adapter
 * renders (same prompt, same strict json_schema), with the row id as custom_id.
 * No ledger, no resume, no retries, no dedupe: the floor offpeak is measured against.
 *
 *   node --max-semi-space-size=8 bench/baseline-openai.ts --input x.csv --out out.jsonl \
 *     --url http://127.0.0.1:PORT/v1 --work dir [--max-requests 10000] [--in-flight 3]
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
    "in-flight": { type: "string", default: "3" }
  }
})
const maxRequests = Number(values["max-requests"])
const inFlight = Number(values["in-flight"])
const client = new OpenAI({ apiKey: "bench", baseURL: values.url!, maxRetries: 3 })
fs.mkdirSync(values.work!, { recursive: true })

// the JSON schema a hand-written script would paste in (same shape as the offpeak pipeline's Label)
const schema = {
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

const started = performance.now()
const output = fs.createWriteStream(values.out!)
let rows = 0
let batchNo = 0
const running = new Set<Promise<void>>()

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const runBatch = async (lines: Array<string>, texts: Map<string, string>) => {
  const file = path.join(values.work!, `batch-${++batchNo}.jsonl`)
  fs.writeFileSync(file, lines.join("\n") + "\n")
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
      out += JSON.stringify({ id: result.custom_id, text: texts.get(result.custom_id), output: JSON.parse(content) }) + "\n"
    }
    output.write(out)
  }
  fs.rmSync(file)
}

const submit = async (lines: Array<string>, texts: Map<string, string>) => {
  while (running.size >= inFlight) await Promise.race(running)
  const p = runBatch(lines, texts).finally(() => running.delete(p))
  running.add(p)
}

let lines: Array<string> = []
let texts = new Map<string, string>()
const parser = fs.createReadStream(values.input!).pipe(Papa.parse(Papa.NODE_STREAM_INPUT, { header: true }))
for await (const row of parser as AsyncIterable<{ id: string; text: string }>) {
  rows++
  lines.push(JSON.stringify({
    custom_id: row.id,
    method: "POST",
    url: "/v1/chat/completions",
    body: {
      model: "gpt-4o-mini",
      messages: [{ role: "system", content: "Label the ticket." }, { role: "user", content: row.text }],
      max_completion_tokens: 400,
      temperature: 0,
      response_format: { type: "json_schema", json_schema: { name: "label", strict: true, schema } }
    }
  }))
  texts.set(row.id, row.text)
  if (lines.length >= maxRequests) {
    await submit(lines, texts)
    lines = []
    texts = new Map()
  }
}
if (lines.length > 0) await submit(lines, texts)
await Promise.all(running)
await new Promise((r) => output.end(r))
const endedAtMs = Date.now()
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  JSON.stringify({ rows, seconds, maxRssMb: process.resourceUsage().maxRSS / 1024, endedAtMs, cpuSeconds: cpuNow(), loadCpuSeconds }) + "\n"
)

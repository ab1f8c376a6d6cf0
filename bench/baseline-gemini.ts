/**
 * The hand-written Gemini baseline: the same job as bench/offpeak.ts --provider gemini
 * with no framework. Reads the CSV (papaparse), cuts batches of --max-requests rows and
 * creates them with the official @google/genai client in batch mode (at most --in-flight
 * at once): inline requests (`ai.batches.create({ src: [...] })`) when the batch stays
 * under the documented 20 MB inline limit, as offpeak's adapter decides, else a JSONL
 * file of `{"key", "request"}` lines uploaded with `ai.files.upload` and created over it.
 * Polls `ai.batches.get` (100 ms growing to 1 s, as offpeak) until the batch has ended,
 * reads the results (`dest.inlinedResponses`, or the responses file through
 * `ai.files.download`), joins them on the key (the emulator, like the API may, returns
 * them out of order) and appends them to one JSONL file. Each request is what offpeak's
 * adapter renders: same model, system instruction, user text, generation config and
 * `responseJsonSchema`, the row id as the key. No ledger, no resume, no retries, no
 * dedupe: the floor offpeak is measured against.
 *
 *   node --max-semi-space-size=8 bench/baseline-gemini.ts --input x.csv --out out.jsonl \
 *     --url http://127.0.0.1:PORT --work dir [--max-requests 10000] [--in-flight 3]
 *
 * Prints one JSON line: rows, seconds, maxRssMb, endedAtMs (epoch ms once the output file
 * is closed), cpuSeconds (user + system CPU of this process, loading included) and
 * loadCpuSeconds (the part spent before the clock started). bench/run.ts starts it.
 */
import { type BatchJob, GoogleGenAI, type InlinedRequest, JobState } from "@google/genai"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
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
    work: { type: "string" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" }
  }
})
const maxRequests = Number(values["max-requests"])
const inFlight = Number(values["in-flight"])
const ai = new GoogleGenAI({ apiKey: "bench", httpOptions: { baseUrl: values.url! } })
fs.mkdirSync(values.work!, { recursive: true })

const MODEL = "gemini-2.5-flash"
/** "keep the total request under 20 MB" (the batch-mode guide): larger batches go as a file */
const INLINE_LIMIT = 20_000_000

// the generation config a hand-written script would paste in (the shape offpeak renders from the pipeline's Label schema)
const systemInstruction = { parts: [{ text: "Label the ticket." }] }
const generationConfig = {
  temperature: 0,
  maxOutputTokens: 400,
  responseMimeType: "application/json",
  responseJsonSchema: {
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
}

/** one request of a batch, in the REST form of an input-file line */
interface Line {
  readonly key: string
  readonly request: {
    readonly contents: ReadonlyArray<{ readonly parts: ReadonlyArray<{ readonly text: string }>; readonly role: "user" }>
    readonly systemInstruction: typeof systemInstruction
    readonly generationConfig: typeof generationConfig
  }
}
const lineOf = (key: string, text: string): Line => ({
  key,
  request: { contents: [{ parts: [{ text }], role: "user" }], systemInstruction, generationConfig }
})
// a line's bytes are its key's and text's JSON plus a constant (measured once, so no line is serialized twice)
const LINE_BYTES = Buffer.byteLength(JSON.stringify(lineOf("", ""))) - 4

const started = performance.now()
const output = fs.createWriteStream(values.out!)
let rows = 0
let batchNo = 0
const running = new Set<Promise<void>>()

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const ENDED = new Set<string>([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED, JobState.JOB_STATE_EXPIRED])

/** a `GenerateContentResponse` as JSON (the SDK hands batch results over as plain objects: no `.text` getter) */
interface Answer {
  readonly candidates?: ReadonlyArray<{ readonly content?: { readonly parts?: ReadonlyArray<{ readonly text?: string }> } }>
}
const textOf = (response: Answer | undefined) => response?.candidates?.[0]?.content?.parts?.map((p) => p.text ?? "").join("") ?? ""

const runBatch = async (lines: Array<Line>, bytes: number, texts: Map<string, string>) => {
  const n = ++batchNo
  let batch: BatchJob
  let inputFile: string | undefined
  if (bytes + 1024 <= INLINE_LIMIT) {
    const src: Array<InlinedRequest> = lines.map((l) => ({
      model: MODEL,
      contents: l.request.contents as NonNullable<InlinedRequest["contents"]>,
      metadata: { key: l.key },
      config: { systemInstruction, ...generationConfig }
    }))
    batch = await ai.batches.create({ model: MODEL, src, config: { displayName: `bench ${n}` } })
  } else {
    const file = path.join(values.work!, `batch-${n}.jsonl`)
    const fd = fs.openSync(file, "w")
    for (let i = 0; i < lines.length; i += 1000) {
      fs.writeSync(fd, lines.slice(i, i + 1000).map((l) => JSON.stringify(l) + "\n").join(""))
    }
    fs.closeSync(fd)
    const uploaded = await ai.files.upload({ file, config: { mimeType: "jsonl", displayName: `bench ${n}` } })
    fs.rmSync(file)
    inputFile = uploaded.name!
    batch = await ai.batches.create({ model: MODEL, src: inputFile, config: { displayName: `bench ${n}` } })
  }
  // 100 ms growing to 1 s (offpeak's cadence)
  for (let delay = 100; !ENDED.has(batch.state ?? ""); delay = Math.min(1000, delay * 1.5)) {
    await sleep(delay)
    batch = await ai.batches.get({ name: batch.name! })
  }
  if (batch.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`batch ${batch.name} ended ${batch.state}`)
  let out = ""
  if (batch.dest?.inlinedResponses !== undefined) {
    for (const r of batch.dest.inlinedResponses) {
      const key = r.metadata?.key
      if (key === undefined || r.response === undefined) continue
      out += JSON.stringify({ id: key, text: texts.get(key), output: JSON.parse(textOf(r.response)) }) + "\n"
    }
    output.write(out)
  } else if (batch.dest?.fileName !== undefined) {
    const file = path.join(values.work!, `results-${n}.jsonl`)
    await ai.files.download({ file: batch.dest.fileName, downloadPath: file })
    for await (const line of readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity })) {
      if (line.length === 0) continue
      const result = JSON.parse(line) as { key: string; response?: Answer }
      if (result.response === undefined) continue
      out += JSON.stringify({ id: result.key, text: texts.get(result.key), output: JSON.parse(textOf(result.response)) }) + "\n"
      if (out.length >= 1 << 20) {
        if (!output.write(out)) await new Promise<void>((r) => output.once("drain", () => r()))
        out = ""
      }
    }
    output.write(out)
    fs.rmSync(file)
  }
  if (inputFile !== undefined) await ai.files.delete({ name: inputFile })
}

const submit = async (lines: Array<Line>, bytes: number, texts: Map<string, string>) => {
  while (running.size >= inFlight) await Promise.race(running)
  const p = runBatch(lines, bytes, texts).finally(() => running.delete(p))
  running.add(p)
}

let lines: Array<Line> = []
let bytes = 0
let texts = new Map<string, string>()
const parser = fs.createReadStream(values.input!).pipe(Papa.parse(Papa.NODE_STREAM_INPUT, { header: true }))
for await (const row of parser as AsyncIterable<{ id: string; text: string }>) {
  rows++
  lines.push(lineOf(row.id, row.text))
  bytes += LINE_BYTES + Buffer.byteLength(JSON.stringify(row.id)) + Buffer.byteLength(JSON.stringify(row.text))
  texts.set(row.id, row.text)
  if (lines.length >= maxRequests) {
    await submit(lines, bytes, texts)
    lines = []
    bytes = 0
    texts = new Map()
  }
}
if (lines.length > 0) await submit(lines, bytes, texts)
await Promise.all(running)
await new Promise((r) => output.end(r))
const endedAtMs = Date.now()
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  JSON.stringify({ rows, seconds, maxRssMb: process.resourceUsage().maxRSS / 1024, endedAtMs, cpuSeconds: cpuNow(), loadCpuSeconds }) + "\n"
)

/**
 * The hand-written baseline of the Postgres → embeddings → Postgres scenario: the same job as bench/offpeak.ts
 * `--pg-embeddings` with no framework, `pg` and the official `openai` SDK only.
 * Reads `offpeak_bench_pg.documents` in keyset pages of 1,000 (`WHERE id > $1 ORDER BY id LIMIT 1000`), writes batch
 * JSONL files of --max-requests `/v1/embeddings` lines (the body offpeak's adapter renders: model, input,
 * `encoding_format: "base64"`, dimensions; the row id as custom_id), uploads them and creates batches (at most
 * --in-flight at once; reading waits while that many are out), polls (100 ms growing to 1 s, every 100 ms while
 * finalizing, as offpeak), downloads the output, decodes the base64 float32 vectors and upserts `(id, embedding)` into
 * the target table, one transaction per batch, in multi-row `INSERT … ON CONFLICT (id) DO UPDATE` statements of 1,000
 * rows (pgvector's text form with --vector-type vector, a `real[]` literal otherwise).
 * No ledger, no resume, no retries, no dedupe, no validation: the floor offpeak is measured against.
 *
 *   node --max-semi-space-size=8 bench/baseline-pg-embeddings.ts --pg-url postgres://… --table embeddings_baseline \
 *     --url http://127.0.0.1:PORT/v1 --work dir [--vector-type vector|real[]] [--dimensions 256] [--max-requests 10000] [--in-flight 3]
 *
 * Prints one JSON line: rows, seconds, maxRssMb, endedAtMs (epoch ms once everything is written and the pool
 * closed), lastWriteMs (epoch ms when the last batch's transaction committed), cpuSeconds (user + system CPU of this
 * process, loading included) and loadCpuSeconds (the part spent before the clock started). bench/run.ts starts it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import OpenAI from "openai"
import pg from "pg"

const cpuNow = () => {
  const u = process.resourceUsage()
  return (u.userCPUTime + u.systemCPUTime) / 1e6
}
const loadCpuSeconds = cpuNow()

const { values } = parseArgs({
  options: {
    "pg-url": { type: "string" },
    table: { type: "string" },
    url: { type: "string" },
    work: { type: "string" },
    "vector-type": { type: "string", default: "vector" },
    dimensions: { type: "string", default: "256" },
    "max-requests": { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "3" }
  }
})
const SCHEMA = "offpeak_bench_pg"
const MODEL = "text-embedding-3-small"
const PAGE = 1000
const ROWS_PER_STATEMENT = 1000
const dimensions = Number(values.dimensions)
const maxRequests = Number(values["max-requests"])
const inFlight = Number(values["in-flight"])
const vector = values["vector-type"] === "vector"
const target = `${SCHEMA}.${values.table!}`
const client = new OpenAI({ apiKey: "bench", baseURL: values.url!, maxRetries: 3 })
const pool = new pg.Pool({ connectionString: values["pg-url"]!, max: inFlight + 1 })
fs.mkdirSync(values.work!, { recursive: true })

const started = performance.now()
let rows = 0
let written = 0
let lastWriteMs = 0
let batchNo = 0
const running = new Set<Promise<void>>()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** upserts one batch's answers in one transaction */
const store = async (answers: Array<[number, string]>) => {
  const db = await pool.connect()
  try {
    await db.query("BEGIN")
    const cast = vector ? "::vector" : "::real[]"
    for (let first = 0; first < answers.length; first += ROWS_PER_STATEMENT) {
      const chunk = answers.slice(first, first + ROWS_PER_STATEMENT)
      const params: Array<unknown> = []
      const tuples: Array<string> = []
      for (const [id, literal] of chunk) {
        params.push(id, literal)
        tuples.push(`($${params.length - 1}::integer, $${params.length}${cast})`)
      }
      await db.query(
        `INSERT INTO ${target} (id, embedding) VALUES ${tuples.join(", ")} ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding`,
        params
      )
    }
    await db.query("COMMIT")
    lastWriteMs = Date.now()
    written += answers.length
  } catch (error) {
    await db.query("ROLLBACK").catch(() => undefined)
    throw error
  } finally {
    db.release()
  }
}

const runBatch = async (file: string) => {
  const uploaded = await client.files.create({ file: fs.createReadStream(file), purpose: "batch" })
  let batch = await client.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/embeddings", completion_window: "24h" })
  for (let delay = 100; batch.status !== "completed" && batch.status !== "failed" && batch.status !== "expired" && batch.status !== "cancelled"; delay = batch.status === "finalizing" ? 100 : Math.min(1000, delay * 1.5)) {
    await sleep(delay)
    batch = await client.batches.retrieve(batch.id)
  }
  if (!batch.output_file_id) throw new Error(`batch ${batch.id} ended ${batch.status} without an output file`)
  const text = await (await client.files.content(batch.output_file_id)).text()
  const answers: Array<[number, string]> = []
  for (const line of text.split("\n")) {
    if (line.length === 0) continue
    const result = JSON.parse(line)
    const bytes = Buffer.from(result.response.body.data[0].embedding as string, "base64")
    const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))
    const list = floats.join(",")
    answers.push([Number(result.custom_id), vector ? `[${list}]` : `{${list}}`])
  }
  await store(answers)
  fs.rmSync(file)
}

const submit = async (file: string) => {
  while (running.size >= inFlight) await Promise.race(running)
  const p = runBatch(file).finally(() => running.delete(p))
  running.add(p)
}

// the open batch: its file and lines
let lines: Array<string> = []
const closeBatch = async () => {
  const file = path.join(values.work!, `batch-${++batchNo}.jsonl`)
  fs.writeFileSync(file, lines.join(""))
  lines = []
  await submit(file)
}
let after = 0
for (;;) {
  const page = await pool.query<{ id: number; text: string }>(
    `SELECT id, text FROM ${SCHEMA}.documents WHERE id > $1 ORDER BY id LIMIT ${PAGE}`,
    [after]
  )
  for (const row of page.rows) {
    rows++
    lines.push(JSON.stringify({
      custom_id: String(row.id),
      method: "POST",
      url: "/v1/embeddings",
      body: { model: MODEL, input: row.text, encoding_format: "base64", dimensions }
    }) + "\n")
    if (lines.length >= maxRequests) await closeBatch()
  }
  if (page.rows.length < PAGE) break
  after = page.rows.at(-1)!.id
}
if (lines.length > 0) await closeBatch()
await Promise.all(running)
await pool.end()
if (written !== rows) throw new Error(`${written} of ${rows} rows written`)
const endedAtMs = Date.now()
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  JSON.stringify({ rows, seconds, maxRssMb: process.resourceUsage().maxRSS / 1024, endedAtMs, lastWriteMs, cpuSeconds: cpuNow(), loadCpuSeconds }) + "\n"
)

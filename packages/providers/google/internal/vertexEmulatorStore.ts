/**
 * The Vertex emulator's durable state: one JSON record per batch prediction
 * job in `<dir>/jobs/<id>.json`, written through on every change (temp file,
 * fsync, rename: a SIGKILL never leaves a half-written record), and a counter
 * file for job ids. A job's rows live where the job reads and writes them (the
 * BigQuery and Cloud Storage emulators); its record says how far it got, so a
 * restarted emulator carries on from the last chunk it wrote.
 *
 * @internal
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type { JobState, ModelKind, RpcStatus } from "./vertexWire.ts"

/** a per-row injected failure: a `google.rpc.Code` name and the share of rows that get it */
export interface RowFailure {
  readonly code: string
  readonly rate: number
}

/** the knobs a job was created under: fixed for its whole life, restarts included */
export interface Knobs {
  readonly seed: number
  /** time in `JOB_STATE_PENDING` before the job starts */
  readonly pendingMs: number
  /** rows answered per second while running */
  readonly rowsPerSecond: number
  /** rows read, answered and written at a time (one load job, or one output object, per chunk) */
  readonly chunkRows: number
  readonly cancellingMs: number
  /** a job not done this long after creation ends `JOB_STATE_EXPIRED`, its written rows kept */
  readonly completionWindowMs: number
  readonly rowFailures: ReadonlyArray<RowFailure>
  /** the share of answers that do not decode (cut at the token limit, prose, or JSON of another shape) */
  readonly malformedAnswers: number
  readonly shuffle: boolean
}

/** where a job reads and writes */
export interface Io {
  readonly format: "bigquery" | "jsonl"
  /** `bq://…` or `gs://…` (the first of `uris`) */
  readonly uri: string
  readonly uris?: ReadonlyArray<string> | undefined
}

/** where the job's answers went, once it started */
export interface OutputInfo {
  readonly gcsOutputDirectory?: string | undefined
  readonly bigqueryOutputDataset?: string | undefined
  readonly bigqueryOutputTable?: string | undefined
}

/** how far a running job got: rows read, chunks written, answers */
export interface Progress {
  /** rows in the input, once counted */
  readonly total: number | null
  readonly rows: number
  readonly chunks: number
  readonly succeeded: number
  readonly failed: number
}

/** how a job ended */
export interface Final {
  readonly state: Extract<JobState, "JOB_STATE_SUCCEEDED" | "JOB_STATE_FAILED" | "JOB_STATE_CANCELLED" | "JOB_STATE_EXPIRED">
  readonly ended_ms: number
  readonly error: RpcStatus | null
}

/** a job as persisted */
export interface JobRecord {
  /** a number, as Vertex's job ids are */
  readonly id: string
  readonly seq: number
  readonly project: string
  readonly location: string
  readonly displayName: string
  /** `publishers/google/models/<id>` */
  readonly model: string
  readonly kind: ModelKind
  readonly labels: Readonly<Record<string, string>>
  /** the job's `modelParameters` offpeak reads: `outputDimensionality` of a text-embedding model */
  readonly parameters?: { readonly outputDimensionality?: number | undefined } | undefined
  readonly input: Io
  readonly output: Io
  readonly created_ms: number
  readonly knobs: Knobs
  /** a whole-job failure picked at creation (`failJobs`) */
  readonly injected: RpcStatus | null
  /** when it took a running slot (left `JOB_STATE_QUEUED`) */
  readonly dequeued_ms: number | null
  readonly started_ms: number | null
  readonly cancel_ms: number | null
  readonly outputInfo: OutputInfo | null
  readonly progress: Progress
  readonly final: Final | null
  readonly deleted_ms: number | null
}

/** writes a file atomically: a temp file beside it, fsynced, then renamed over it */
const writeAtomic = (file: string, data: string) => {
  const temp = `${file}.${crypto.randomBytes(6).toString("hex")}.tmp`
  const fd = fs.openSync(temp, "w")
  try {
    fs.writeSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(temp, file)
}

/** the store: records in memory, written through */
export interface Store {
  readonly dir: string
  readonly jobs: ReadonlyMap<string, JobRecord>
  readonly put: (job: JobRecord) => void
  /** a new job id (numeric, increasing) and its sequence number */
  readonly nextId: () => { readonly id: string; readonly seq: number }
  /** a scratch file path under the folder */
  readonly tempPath: (name: string) => string
}

/** opens (or creates) the store in `dir`, loading every job */
export const open = (dir: string): Store => {
  const jobsDir = path.join(dir, "jobs")
  const tmpDir = path.join(dir, "tmp")
  fs.mkdirSync(jobsDir, { recursive: true })
  fs.mkdirSync(tmpDir, { recursive: true })
  for (const name of fs.readdirSync(tmpDir)) fs.rmSync(path.join(tmpDir, name), { force: true, recursive: true })
  const jobs = new Map<string, JobRecord>()
  for (const name of fs.readdirSync(jobsDir)) {
    const file = path.join(jobsDir, name)
    if (name.endsWith(".tmp")) {
      fs.rmSync(file, { force: true })
      continue
    }
    if (!name.endsWith(".json")) continue
    const rec = JSON.parse(fs.readFileSync(file, "utf8")) as JobRecord
    jobs.set(rec.id, rec)
  }
  const counterFile = path.join(dir, "counter.json")
  let counter = fs.existsSync(counterFile) ? (JSON.parse(fs.readFileSync(counterFile, "utf8")) as { seq: number }).seq : 0
  for (const j of jobs.values()) counter = Math.max(counter, j.seq)
  return {
    dir,
    jobs,
    put: (job) => {
      writeAtomic(path.join(jobsDir, `${job.id}.json`), JSON.stringify(job))
      jobs.set(job.id, job)
    },
    nextId: () => {
      counter++
      writeAtomic(counterFile, JSON.stringify({ seq: counter }))
      // Vertex's ids are large decimal numbers; a base keeps them of one length and never starting with 0
      return { id: String(1_000_000_000_000_000_000n + BigInt(counter) * 7_919n), seq: counter }
    },
    tempPath: (name) => path.join(tmpDir, `${crypto.randomBytes(6).toString("hex")}-${name}`)
  }
}

/**
 * The emulator's durable state: one folder holding every batch as a JSON
 * record, its requests (one JSONL line each, as sent) and, once it ended, its
 * results (JSONL, shuffled). Records live in memory and are written through on
 * every change (temp file + rename, so a SIGKILL never leaves a half-written
 * record); requests and results stay on disk.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

// ===== API objects =====

/** the API's `request_counts` */
export interface RequestCounts {
  readonly processing: number
  readonly succeeded: number
  readonly errored: number
  readonly canceled: number
  readonly expired: number
}

/** the API's `MessageBatch` (fields in the order the real API sends them) */
export interface BatchObject {
  readonly id: string
  readonly type: "message_batch"
  readonly processing_status: "in_progress" | "canceling" | "ended"
  readonly request_counts: RequestCounts
  readonly ended_at: string | null
  readonly created_at: string
  readonly expires_at: string
  readonly archived_at: string | null
  readonly cancel_initiated_at: string | null
  readonly results_url: string | null
}

// ===== records =====

/** the failure types a line can be given on purpose */
export type InjectedType = "api_error" | "overloaded_error" | "invalid_request_error"

/** the emulator knobs a batch was created under: fixed for its whole life, restarts included */
export interface Knobs {
  readonly seed: number
  readonly linesPerSecond: number
  readonly cancellingMs: number
  readonly completionWindowMs: number
  readonly lineFailures: ReadonlyArray<{ readonly type: InjectedType; readonly rate: number }>
  readonly shuffle: boolean
  readonly notFoundAfterCreateMs: number
}

/** how a batch ended, once its results file is written */
export interface Final {
  readonly ended_ms: number
  readonly counts: RequestCounts
}

/** a batch as persisted */
export interface BatchRecord {
  readonly id: string
  readonly seq: number
  readonly created_ms: number
  readonly knobs: Knobs
  /** the `anthropic-version` the batch was created with: it decides which params are accepted */
  readonly version: string
  readonly total: number
  readonly cancel_ms: number | null
  /** set once the batch ended and its results file was written */
  readonly final: Final | null
  /** set when the batch was deleted (its files are gone; the record stays for the stats) */
  readonly deleted_ms: number | null
  /** when the create request was answered (absent or null: not answered, e.g. the client went away first) */
  readonly answered_ms?: number | null | undefined
  /** how many times its results were served */
  readonly results_downloads?: number | undefined
}

// ===== ids =====

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

const encodeId = (bytes: Uint8Array, n: number) => {
  let out = ""
  for (let i = 0; i < n; i++) out += ALPHABET[bytes[i % bytes.length]! % ALPHABET.length]
  return out
}

/** a random id shaped like Anthropic's, e.g. `msgbatch_01` + 22 characters */
export const randomId = (prefix: string, n = 22) => `${prefix}01${encodeId(crypto.randomBytes(n), n)}`

/** a deterministic id from a seed text */
export const derivedId = (prefix: string, seed: string, n = 22) =>
  `${prefix}01${encodeId(crypto.createHash("sha256").update(seed).digest(), n)}`

// ===== the store =====

const writeAtomic = (file: string, text: string) => {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

/** the loaded folder: records in memory, requests and results on disk */
export interface Store {
  readonly dir: string
  readonly batches: Map<string, BatchRecord>
  /** a batch's requests, one JSON line each, in the order they were sent */
  readonly requestsPath: (id: string) => string
  /** a batch's results, written once it ended */
  readonly resultsPath: (id: string) => string
  /** a fresh path for bytes being written, in the same folder so a rename is atomic */
  readonly tempPath: (label: string) => string
  readonly nextSeq: () => number
  readonly putBatch: (batch: BatchRecord) => void
  /** removes a batch's requests and results (the record stays, marked deleted) */
  readonly removeFiles: (id: string) => void
}

/** opens (creating if needed) the folder and loads every record in it */
export const open = (dir: string): Store => {
  const batchesDir = path.join(dir, "batches")
  fs.mkdirSync(batchesDir, { recursive: true })
  const batches = new Map<string, BatchRecord>()
  let seq = 0
  const records: Array<BatchRecord> = []
  for (const name of fs.readdirSync(batchesDir)) {
    if (name.endsWith(".tmp") || name.endsWith(".part")) {
      fs.rmSync(path.join(batchesDir, name), { force: true })
      continue
    }
    if (!name.endsWith(".json")) continue
    try {
      const rec = JSON.parse(fs.readFileSync(path.join(batchesDir, name), "utf8")) as BatchRecord
      if (typeof rec?.id === "string") records.push(rec)
    } catch {
      // a record that cannot be read is skipped, never fatal
    }
  }
  for (const rec of records.sort((a, b) => a.seq - b.seq)) {
    // a batch whose requests were never committed is not a batch
    if (rec.deleted_ms === null && !fs.existsSync(path.join(batchesDir, `${rec.id}.requests.jsonl`))) continue
    // results whose record was not updated yet are written again
    if (rec.final === null) fs.rmSync(path.join(batchesDir, `${rec.id}.results.jsonl`), { force: true })
    batches.set(rec.id, rec)
    seq = Math.max(seq, rec.seq)
  }
  let temp = 0
  return {
    dir,
    batches,
    requestsPath: (id) => path.join(batchesDir, `${id}.requests.jsonl`),
    resultsPath: (id) => path.join(batchesDir, `${id}.results.jsonl`),
    tempPath: (label) => path.join(batchesDir, `${label}.${process.pid}.${++temp}.${crypto.randomBytes(4).toString("hex")}.part`),
    nextSeq: () => ++seq,
    putBatch: (batch) => {
      writeAtomic(path.join(batchesDir, `${batch.id}.json`), JSON.stringify(batch))
      batches.set(batch.id, batch)
    },
    removeFiles: (id) => {
      fs.rmSync(path.join(batchesDir, `${id}.requests.jsonl`), { force: true })
      fs.rmSync(path.join(batchesDir, `${id}.results.jsonl`), { force: true })
    }
  }
}

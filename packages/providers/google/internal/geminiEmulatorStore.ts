/**
 * The Gemini emulator's durable state: one folder holding every file of the
 * Files API (bytes and a JSON record) and every batch (a JSON record, its
 * inline requests as JSONL, and the inline results once it ended). Records
 * live in memory and are written through on every change (temp file +
 * rename, so a SIGKILL never leaves a half-written record); bytes stay on
 * disk. Upload sessions live in memory only: a restarted emulator forgets
 * them, as a client must then start its upload again.
 *
 * @internal
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type { BatchState } from "./geminiWire.ts"

// ===== API objects =====

/** the API's `File` */
export interface FileObject {
  readonly name: string
  readonly displayName?: string
  readonly mimeType: string
  /** int64 as a string */
  readonly sizeBytes: string
  readonly createTime: string
  readonly updateTime: string
  readonly expirationTime: string
  /** base64 of the SHA-256 of the bytes */
  readonly sha256Hash: string
  readonly uri: string
  readonly downloadUri: string
  readonly state: "ACTIVE"
  readonly source: "UPLOADED" | "GENERATED"
}

/** a file as persisted: what the API shows, its creation sequence number and where it came from */
export interface FileRecord {
  /** the id, without `files/` */
  readonly id: string
  readonly seq: number
  readonly displayName: string | null
  readonly mimeType: string
  readonly bytes: number
  readonly sha256: string
  readonly created_ms: number
  readonly source: "UPLOADED" | "GENERATED"
}

// ===== records =====

/** a per-line failure rule: a `google.rpc.Code` name and the share of lines that get it */
export interface LineFailure {
  readonly code: string
  readonly rate: number
}

/** the knobs a batch was created under: fixed for its whole life, restarts included */
export interface Knobs {
  readonly seed: number
  readonly pendingMs: number
  readonly linesPerSecond: number
  readonly cancellingMs: number
  readonly completionWindowMs: number
  readonly lineFailures: ReadonlyArray<LineFailure>
  readonly shuffle: boolean
  readonly notFoundAfterCreateMs: number
}

/** a whole-batch failure (`google.rpc.Status`) */
export interface Failure {
  readonly code: number
  readonly message: string
}

/** what validation found */
export type Validation =
  | {
    readonly ok: true
    readonly total: number
    /** 0-based indices of the requests that fail (injected failures and invalid requests), ascending */
    readonly failing: ReadonlyArray<number>
  }
  | { readonly ok: false; readonly error: Failure }

/** how a batch ended, once its results are written */
export interface Final {
  readonly state: Exclude<BatchState, "BATCH_STATE_UNSPECIFIED" | "BATCH_STATE_PENDING" | "BATCH_STATE_RUNNING">
  readonly ended_ms: number
  readonly total: number
  readonly succeeded: number
  readonly failed: number
  /** `files/batch-…` for a file batch, `inline` when the results are in `<id>.results.jsonl`, null when none */
  readonly output: string | null
  readonly error: Failure | null
}

/** a batch as persisted */
export interface BatchRecord {
  /** the id, without `batches/` */
  readonly id: string
  readonly seq: number
  readonly kind: "generate" | "embed"
  /** `models/…` */
  readonly model: string
  readonly displayName: string
  /** `files/…` for a file batch, null for inline requests (in `<id>.requests.jsonl`) */
  readonly inputFile: string | null
  readonly priority: string
  readonly created_ms: number
  readonly knobs: Knobs
  /** a whole-batch failure picked for it at creation (`failBatches`), if any */
  readonly injected: Failure | null
  readonly cancel_ms: number | null
  /** inline batches are validated at creation; file batches while pending */
  readonly validation: Validation | null
  readonly final: Final | null
  readonly deleted_ms: number | null
}

// ===== ids =====

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

const encodeId = (bytes: Uint8Array, n: number) => {
  let out = ""
  for (let i = 0; i < n; i++) out += ALPHABET[bytes[i % bytes.length]! % ALPHABET.length]
  return out
}

/** a random lower-case id of `n` characters, like the API's `files/…` and `batches/…` ids */
export const randomId = (n = 12) => encodeId(crypto.randomBytes(n), n)

/** a deterministic id from a seed text */
export const derivedId = (seed: string, n = 12) => encodeId(crypto.createHash("sha256").update(seed).digest(), n)

// ===== the store =====

const writeAtomic = (file: string, text: string) => {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

const readJsonDir = <A>(dir: string): Array<A> => {
  const out: Array<A> = []
  for (const name of fs.readdirSync(dir)) {
    if (name.endsWith(".tmp") || name.endsWith(".part")) {
      fs.rmSync(path.join(dir, name), { force: true })
      continue
    }
    if (!name.endsWith(".json")) continue
    try {
      out.push(JSON.parse(fs.readFileSync(path.join(dir, name), "utf8")) as A)
    } catch {
      // a record that cannot be read is skipped, never fatal
    }
  }
  return out
}

/** the loaded folder: records in memory, bytes on disk */
export interface Store {
  readonly dir: string
  readonly files: Map<string, FileRecord>
  readonly batches: Map<string, BatchRecord>
  /** where a file's bytes live */
  readonly dataPath: (id: string) => string
  /** an inline batch's requests, one batch line each, in the order they were sent */
  readonly requestsPath: (id: string) => string
  /** an inline batch's results, one `InlinedResponse` JSON each, written once it ended */
  readonly resultsPath: (id: string) => string
  /** a fresh path for bytes being written, in the files folder so a rename is atomic */
  readonly tempPath: (label: string) => string
  readonly nextSeq: () => number
  readonly putFile: (file: FileRecord) => void
  readonly deleteFile: (id: string) => void
  readonly putBatch: (batch: BatchRecord) => void
  /** removes an inline batch's requests and results (the record stays, marked deleted) */
  readonly removeBatchFiles: (id: string) => void
  readonly filesUploaded: () => number
  readonly countUpload: () => void
}

/** opens (creating if needed) the folder and loads every record in it */
export const open = (dir: string): Store => {
  const filesDir = path.join(dir, "files")
  const batchesDir = path.join(dir, "batches")
  fs.mkdirSync(filesDir, { recursive: true })
  fs.mkdirSync(batchesDir, { recursive: true })
  const files = new Map<string, FileRecord>()
  const batches = new Map<string, BatchRecord>()
  let seq = 0
  for (const f of readJsonDir<FileRecord>(filesDir).sort((a, b) => a.seq - b.seq)) {
    if (typeof f?.id !== "string" || !fs.existsSync(path.join(filesDir, `${f.id}.data`))) continue
    files.set(f.id, f)
    seq = Math.max(seq, f.seq)
  }
  for (const b of readJsonDir<BatchRecord>(batchesDir).sort((a, b) => a.seq - b.seq)) {
    if (typeof b?.id !== "string") continue
    // an inline batch whose requests were never committed is not a batch
    if (b.inputFile === null && b.deleted_ms === null && !fs.existsSync(path.join(batchesDir, `${b.id}.requests.jsonl`))) continue
    // inline results whose record was not updated yet are written again
    if (b.final === null) fs.rmSync(path.join(batchesDir, `${b.id}.results.jsonl`), { force: true })
    batches.set(b.id, b)
    seq = Math.max(seq, b.seq)
  }
  const statsFile = path.join(dir, "stats.json")
  let uploaded = 0
  try {
    uploaded = Number(JSON.parse(fs.readFileSync(statsFile, "utf8")).filesUploaded) || 0
  } catch {
    uploaded = [...files.values()].filter((f) => f.source === "UPLOADED").length
  }
  let temp = 0
  return {
    dir,
    files,
    batches,
    dataPath: (id) => path.join(filesDir, `${id}.data`),
    requestsPath: (id) => path.join(batchesDir, `${id}.requests.jsonl`),
    resultsPath: (id) => path.join(batchesDir, `${id}.results.jsonl`),
    tempPath: (label) => path.join(filesDir, `${label}.${process.pid}.${++temp}.${crypto.randomBytes(4).toString("hex")}.part`),
    nextSeq: () => ++seq,
    putFile: (file) => {
      writeAtomic(path.join(filesDir, `${file.id}.json`), JSON.stringify(file))
      files.set(file.id, file)
    },
    deleteFile: (id) => {
      files.delete(id)
      fs.rmSync(path.join(filesDir, `${id}.json`), { force: true })
      fs.rmSync(path.join(filesDir, `${id}.data`), { force: true })
    },
    putBatch: (batch) => {
      writeAtomic(path.join(batchesDir, `${batch.id}.json`), JSON.stringify(batch))
      batches.set(batch.id, batch)
    },
    removeBatchFiles: (id) => {
      fs.rmSync(path.join(batchesDir, `${id}.requests.jsonl`), { force: true })
      fs.rmSync(path.join(batchesDir, `${id}.results.jsonl`), { force: true })
    },
    filesUploaded: () => uploaded,
    countUpload: () => {
      uploaded++
      writeAtomic(statsFile, JSON.stringify({ filesUploaded: uploaded }))
    }
  }
}

/** files stay this long after their creation (the Files API's 48 h; unverified for batch inputs and outputs) */
export const FILE_RETENTION_MS = 48 * 3_600_000

const iso = (ms: number) => new Date(ms).toISOString()

/** the public view of a file record; `origin` is where the client reached the emulator */
export const fileObject = (f: FileRecord, origin: string, version: string): FileObject => ({
  name: `files/${f.id}`,
  ...(f.displayName !== null ? { displayName: f.displayName } : {}),
  mimeType: f.mimeType,
  sizeBytes: String(f.bytes),
  createTime: iso(f.created_ms),
  updateTime: iso(f.created_ms),
  expirationTime: iso(f.created_ms + FILE_RETENTION_MS),
  sha256Hash: f.sha256,
  uri: `${origin}/${version}/files/${f.id}`,
  downloadUri: `${origin}/${version}/files/${f.id}:download?alt=media`,
  state: "ACTIVE",
  source: f.source
})

/**
 * The emulator's durable state: one folder holding every file (bytes and a
 * JSON description) and every batch (one JSON record each). Metadata lives in
 * memory and is written through on every change (temp file + rename, so a
 * SIGKILL never leaves a half-written record); file bytes stay on disk.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

// ===== API objects =====

/** the API's `OpenAIFile` */
export interface FileObject {
  readonly id: string
  readonly object: "file"
  readonly bytes: number
  readonly created_at: number
  readonly expires_at: number | null
  readonly filename: string
  readonly purpose: string
  readonly status: "processed"
  readonly status_details: null
}

/** the API's `BatchError` */
export interface BatchError {
  readonly code: string
  readonly message: string
  readonly param: string | null
  readonly line: number | null
}

/** the API's `Batch` (fields in the order the real API sends them) */
export interface BatchObject {
  readonly id: string
  readonly object: "batch"
  readonly endpoint: string
  readonly model?: string
  readonly errors: { readonly object: "list"; readonly data: ReadonlyArray<BatchError> } | null
  readonly input_file_id: string
  readonly completion_window: string
  readonly status: BatchStatus
  readonly output_file_id: string | null
  readonly error_file_id: string | null
  readonly created_at: number
  readonly in_progress_at: number | null
  readonly expires_at: number
  readonly finalizing_at: number | null
  readonly completed_at: number | null
  readonly failed_at: number | null
  readonly expired_at: number | null
  readonly cancelling_at: number | null
  readonly cancelled_at: number | null
  readonly request_counts: { readonly total: number; readonly completed: number; readonly failed: number }
  readonly usage?: {
    readonly input_tokens: number
    readonly input_tokens_details: { readonly cached_tokens: number }
    readonly output_tokens: number
    readonly output_tokens_details: { readonly reasoning_tokens: number }
    readonly total_tokens: number
  }
  readonly metadata: Record<string, string> | null
}

/** the API's batch statuses */
export type BatchStatus =
  | "validating"
  | "failed"
  | "in_progress"
  | "finalizing"
  | "completed"
  | "expired"
  | "cancelling"
  | "cancelled"

// ===== records =====

/** the emulator knobs a batch was created under: fixed for its whole life, restarts included */
export interface Knobs {
  readonly seed: number
  readonly validationMs: number
  readonly linesPerSecond: number
  readonly finalizingMs: number
  readonly cancellingMs: number
  readonly completionWindowMs: number
  readonly lineFailures: ReadonlyArray<{ readonly status: number; readonly rate: number }>
  readonly shuffle: boolean
  readonly maxLinesPerBatch: number
  /** `GET /v1/batches/{id}` answers 404 for this long after creation (0: never) */
  readonly notFoundAfterCreateMs: number
  /** estimated input tokens this batch plus the in_progress ones may hold, or null (no limit) */
  readonly enqueuedTokenLimit: number | null
  /** per-line non-HTTP errors (`response: null, error: {code, message}`), drawn after `lineFailures` */
  readonly lineErrors: ReadonlyArray<{ readonly code: string; readonly rate: number }>
  /** the fraction of lines left out of both the output and the error file */
  readonly dropLines: number
  /** report `error_file_id: ""` instead of null when no error file was written */
  readonly emptyErrorFileId: boolean
}

/** the knobs added after the first release, at the values that turn them off: records written before them load with these */
export const LATER_KNOBS_OFF = {
  notFoundAfterCreateMs: 0,
  enqueuedTokenLimit: null,
  lineErrors: [],
  dropLines: 0,
  emptyErrorFileId: false
} as const satisfies Partial<Knobs>

/** a whole-batch failure decided when the batch was created (`failBatches`): validation ends in it */
export interface InjectedFailure {
  readonly code: string
  /** null: the emulator's message for the code */
  readonly message: string | null
}

/** what validation found: the model, the number of requests and which of them get an injected failure */
export type Validation =
  | {
    readonly ok: true
    readonly model: string
    readonly total: number
    /** 0-based request indices with an injected failure, ascending */
    readonly failing: ReadonlyArray<number>
    /** estimated input tokens of the whole batch (message contents, embedding inputs); absent in old records */
    readonly inputTokens?: number
  }
  | { readonly ok: false; readonly model: string | null; readonly errors: ReadonlyArray<BatchError> }

/** a file as persisted: the API object plus its creation sequence number (list order) */
export interface FileRecord extends FileObject {
  readonly seq: number
}

/** a batch as persisted: what it was created with, when it was cancelled, what validation found, how it ended */
export interface BatchRecord {
  readonly id: string
  readonly seq: number
  readonly endpoint: string
  readonly input_file_id: string
  readonly completion_window: string
  readonly metadata: Record<string, string> | null
  readonly output_expires_after_seconds: number | null
  readonly created_ms: number
  readonly knobs: Knobs
  /** the whole-batch failure `failBatches` picked for it at creation, if any */
  readonly injected_failure: InjectedFailure | null
  readonly cancel_ms: number | null
  readonly validation: Validation | null
  /** set once the batch reached a terminal state and its output files were written */
  readonly final: BatchObject | null
  /** requests answered (successfully or with an HTTP error) once final */
  readonly processed: number
}

// ===== ids =====

/** a random id with a prefix, e.g. `file-` + 24 hex */
export const randomId = (prefix: string, hexChars = 24) => `${prefix}${crypto.randomBytes(Math.ceil(hexChars / 2)).toString("hex").slice(0, hexChars)}`

/** a deterministic id from a seed text */
export const derivedId = (prefix: string, seed: string, hexChars = 24) =>
  `${prefix}${crypto.createHash("sha256").update(seed).digest("hex").slice(0, hexChars)}`

// ===== the store =====

const writeAtomic = (file: string, text: string) => {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

const readJsonDir = <A>(dir: string): Array<A> => {
  const out: Array<A> = []
  for (const name of fs.readdirSync(dir)) {
    if (name.endsWith(".tmp")) {
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
  /** a fresh path for bytes being written (uploads, outputs), in the same folder so a rename is atomic */
  readonly tempPath: (label: string) => string
  readonly nextSeq: () => number
  readonly putFile: (file: FileRecord) => void
  readonly deleteFile: (id: string) => void
  readonly putBatch: (batch: BatchRecord) => void
  readonly filesUploaded: () => number
  readonly countUpload: () => void
}

/** opens (creating if needed) the folder and loads every record in it */
export const open = (dir: string): Store => {
  const filesDir = path.join(dir, "files")
  const batchesDir = path.join(dir, "batches")
  fs.mkdirSync(filesDir, { recursive: true })
  fs.mkdirSync(batchesDir, { recursive: true })
  for (const name of fs.readdirSync(filesDir)) {
    if (name.endsWith(".part")) fs.rmSync(path.join(filesDir, name), { force: true })
  }
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
    batches.set(b.id, { ...b, knobs: { ...LATER_KNOBS_OFF, ...b.knobs }, injected_failure: b.injected_failure ?? null })
    seq = Math.max(seq, b.seq)
  }
  const statsFile = path.join(dir, "stats.json")
  let uploaded = 0
  try {
    uploaded = Number(JSON.parse(fs.readFileSync(statsFile, "utf8")).filesUploaded) || 0
  } catch {
    uploaded = [...files.values()].filter((f) => f.purpose !== "batch_output").length
  }
  let temp = 0
  return {
    dir,
    files,
    batches,
    dataPath: (id) => path.join(filesDir, `${id}.data`),
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
    filesUploaded: () => uploaded,
    countUpload: () => {
      uploaded++
      writeAtomic(statsFile, JSON.stringify({ filesUploaded: uploaded }))
    }
  }
}

/** the public view of a file record */
export const fileObject = (f: FileRecord): FileObject => ({
  id: f.id,
  object: "file",
  bytes: f.bytes,
  created_at: f.created_at,
  expires_at: f.expires_at,
  filename: f.filename,
  purpose: f.purpose,
  status: "processed",
  status_details: null
})

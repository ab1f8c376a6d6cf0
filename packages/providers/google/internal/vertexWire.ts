/**
 * Vertex AI batch prediction's wire shapes that the adapter and the emulator
 * share: the `BatchPredictionJob` resource as JSON, its `JobState`s, the
 * `bq://` and `gs://` URIs, the labels a job and a request line carry, the
 * row `status` text, and which models take which input form.
 *
 * **Models and their input forms**
 *
 * | model | a JSONL line (Cloud Storage) | a BigQuery input row | an answer |
 * |---|---|---|---|
 * | Gemini (`gemini-*`) | `{"request": GenerateContentRequest}` | a `request` column (JSON) | `response` (a `GenerateContentResponse`), `status` |
 * | text embedding (`text-embedding-*`, `text-multilingual-embedding-*`) | `{"content": "…"}` | a `content` column | `predictions` (`[{embeddings: {values, statistics}}]`), `status` |
 * | Gemini embedding (`gemini-embedding-*`) | `{"key": "…", "request": {content, embed_content_config}}` | not served (Cloud Storage only) | `response` (`{embedding: {values}}`), `status` |
 *
 * A chat line carries its custom id in the request's `labels`
 * (`offpeak_key`, and `offpeak_key_2` for the rest of an id longer than 63
 * characters: label values are at most 63 lowercase letters, digits, `_` and
 * `-`), which Vertex echoes with the request in every output line.
 *
 * @internal
 */

// ===== states =====

/** `JobState` (the API's names) */
export type JobState =
  | "JOB_STATE_UNSPECIFIED"
  | "JOB_STATE_QUEUED"
  | "JOB_STATE_PENDING"
  | "JOB_STATE_RUNNING"
  | "JOB_STATE_SUCCEEDED"
  | "JOB_STATE_FAILED"
  | "JOB_STATE_CANCELLING"
  | "JOB_STATE_CANCELLED"
  | "JOB_STATE_PAUSED"
  | "JOB_STATE_EXPIRED"
  | "JOB_STATE_UPDATING"
  | "JOB_STATE_PARTIALLY_SUCCEEDED"

/** states a job never leaves */
export const TERMINAL: ReadonlySet<string> = new Set([
  "JOB_STATE_SUCCEEDED",
  "JOB_STATE_FAILED",
  "JOB_STATE_CANCELLED",
  "JOB_STATE_EXPIRED",
  "JOB_STATE_PARTIALLY_SUCCEEDED"
])

// ===== the job resource =====

/** a `google.rpc.Status` */
export interface RpcStatus {
  readonly code: number
  readonly message: string
}

/** `BatchPredictionJob` as JSON, as far as offpeak writes and reads it */
export interface JobJson {
  readonly name?: string | undefined
  readonly displayName?: string | undefined
  readonly model?: string | undefined
  readonly labels?: Readonly<Record<string, string>> | undefined
  readonly state?: string | undefined
  readonly error?: { readonly code?: number; readonly message?: string } | undefined
  readonly createTime?: string | undefined
  readonly startTime?: string | undefined
  readonly endTime?: string | undefined
  readonly updateTime?: string | undefined
  readonly inputConfig?: {
    readonly instancesFormat?: string | undefined
    readonly gcsSource?: { readonly uris?: ReadonlyArray<string> } | undefined
    readonly bigquerySource?: { readonly inputUri?: string } | undefined
  }
  readonly outputConfig?: {
    readonly predictionsFormat?: string | undefined
    readonly gcsDestination?: { readonly outputUriPrefix?: string } | undefined
    readonly bigqueryDestination?: { readonly outputUri?: string } | undefined
  }
  readonly outputInfo?: {
    readonly gcsOutputDirectory?: string | undefined
    readonly bigqueryOutputDataset?: string | undefined
    readonly bigqueryOutputTable?: string | undefined
  }
  /** int64 counts as strings (proto3 JSON) */
  readonly completionStats?: {
    readonly successfulCount?: string | number | undefined
    readonly failedCount?: string | number | undefined
    readonly incompleteCount?: string | number | undefined
  }
}

/** an int64 of the JSON (a string, or a number), 0 when absent */
export const int64 = (u: unknown): number => {
  const n = typeof u === "string" ? Number(u) : typeof u === "number" ? u : 0
  return Number.isFinite(n) ? n : 0
}

// ===== URIs =====

/** a BigQuery table or dataset of a `bq://project.dataset[.table]` URI */
export interface BqRef {
  readonly projectId: string
  readonly datasetId: string
  /** absent for a dataset URI */
  readonly tableId?: string | undefined
}

const BQ_PART = /^[A-Za-z0-9_\-:.]+$/

/** `bq://project.dataset[.table]` → its parts; a message when it is not one */
export const parseBq = (uri: string): BqRef | string => {
  if (!uri.startsWith("bq://")) return `${JSON.stringify(uri)} is not a BigQuery URI (bq://project.dataset.table)`
  const rest = uri.slice("bq://".length)
  // a project id may contain a domain and a colon (`example.com:p`): the dataset and table never hold a dot
  const parts = rest.split(".")
  if (parts.length < 2 || parts.some((p) => p.length === 0 || !BQ_PART.test(p))) {
    return `${JSON.stringify(uri)} is not a BigQuery URI (bq://project.dataset or bq://project.dataset.table)`
  }
  if (parts.length === 2) return { projectId: parts[0]!, datasetId: parts[1]! }
  const tableId = parts.at(-1)!
  const datasetId = parts.at(-2)!
  return { projectId: parts.slice(0, -2).join("."), datasetId, tableId }
}

/** the `bq://` URI of a table or dataset */
export const bqUri = (ref: BqRef): string =>
  `bq://${ref.projectId}.${ref.datasetId}${ref.tableId === undefined ? "" : `.${ref.tableId}`}`

/** `gs://bucket/name` → its parts; a message when it is not one */
export const parseGs = (uri: string): { readonly bucket: string; readonly name: string } | string => {
  const m = /^gs:\/\/([^/]+)\/?(.*)$/.exec(uri)
  if (m === null) return `${JSON.stringify(uri)} is not a Cloud Storage URI (gs://bucket/path)`
  return { bucket: m[1]!, name: m[2]! }
}

// ===== labels =====

/** the largest label value */
const LABEL_MAX = 63

/** a label value made of `text`: lowercase letters, digits, `_` and `-`, at most 63 characters (a hash past that) */
export const labelValue = (text: string, hash: (s: string) => string): string => {
  const clean = text.toLowerCase().replace(/[^a-z0-9_-]/g, "_")
  return clean.length <= LABEL_MAX && clean === text ? clean : `h${hash(text).slice(0, LABEL_MAX - 1)}`
}

/** the request labels carrying a custom id; undefined when the id cannot be a label value as it is */
export const keyLabels = (customId: string): Record<string, string> | undefined => {
  if (!/^[a-z0-9_-]{1,126}$/.test(customId)) return undefined
  return customId.length <= LABEL_MAX
    ? { offpeak_key: customId }
    : { offpeak_key: customId.slice(0, LABEL_MAX), offpeak_key_2: customId.slice(LABEL_MAX) }
}

/** the custom id of a request's labels, or undefined */
export const keyOfLabels = (labels: unknown): string | undefined => {
  if (typeof labels !== "object" || labels === null) return undefined
  const l = labels as Record<string, unknown>
  if (typeof l.offpeak_key !== "string") return undefined
  return l.offpeak_key + (typeof l.offpeak_key_2 === "string" ? l.offpeak_key_2 : "")
}

// ===== models =====

/** the kind of model: Gemini generation, a text-embedding model, a Gemini embedding model */
export type ModelKind = "generate" | "embed-text" | "embed-gemini"

/** a model id without its `publishers/google/models/` (or `models/`) prefix */
export const bareModel = (model: string): string => model.replace(/^(projects\/[^/]+\/locations\/[^/]+\/)?publishers\/[^/]+\/models\//, "").replace(/^models\//, "")

/** the kind of a model by its id */
export const modelKind = (model: string): ModelKind => {
  const id = bareModel(model)
  if (/^gemini-embedding/.test(id)) return "embed-gemini"
  if (/^(text-embedding|text-multilingual-embedding|textembedding-gecko|multimodalembedding)/.test(id)) return "embed-text"
  return "generate"
}

/** the model's resource name as a job carries it: `publishers/google/models/<id>` (a full name is kept) */
export const modelName = (model: string): string =>
  model.startsWith("publishers/") || model.startsWith("projects/") ? model : `publishers/google/models/${bareModel(model)}`

// ===== row status =====

/** `google.rpc.Code` names by number */
export const CODE_NAMES: Readonly<Record<number, string>> = {
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  10: "ABORTED",
  13: "INTERNAL",
  14: "UNAVAILABLE"
}

/** the code of a status name (`RESOURCE_EXHAUSTED` → 8) */
export const codeOfName = (name: string): number | undefined => {
  for (const [code, n] of Object.entries(CODE_NAMES)) if (n === name) return Number(code)
  return undefined
}

/**
 * The `status` text of a failed row: `{"code": 8, "message": "…", "status": "RESOURCE_EXHAUSTED"}` as JSON text
 * (the shape of Google's errors; Vertex documents only that the column holds the error).
 */
export const statusText = (failure: RpcStatus): string =>
  JSON.stringify({ code: failure.code, message: failure.message, status: CODE_NAMES[failure.code] ?? "UNKNOWN" })

/** codes a request can be sent again after */
const RETRYABLE = new Set([1, 2, 4, 8, 10, 13, 14])

/**
 * A row's `status` read back: its code (from the JSON, or a status name or HTTP status in the text; 2 UNKNOWN when
 * none), message, and whether sending it again can succeed.
 */
export const readStatus = (text: string): { readonly code: number; readonly message: string; readonly retryable: boolean } => {
  let code: number | undefined
  let message = text
  try {
    const parsed = JSON.parse(text) as { code?: unknown; message?: unknown; status?: unknown; error?: { code?: unknown; message?: unknown; status?: unknown } }
    const e = parsed.error ?? parsed
    if (typeof e.code === "number") code = e.code >= 100 ? undefined : e.code
    if (code === undefined && typeof e.status === "string") code = codeOfName(e.status)
    if (typeof e.message === "string") message = e.message
  } catch {
    // plain text
  }
  if (code === undefined) {
    for (const [c, name] of Object.entries(CODE_NAMES)) {
      if (text.includes(name)) {
        code = Number(c)
        break
      }
    }
  }
  if (code === undefined) {
    const http = /\b(4\d\d|5\d\d)\b/.exec(text)
    code = http === null ? 2 : http[1] === "429" ? 8 : http[1]!.startsWith("5") ? 13 : 3
  }
  return { code, message, retryable: RETRYABLE.has(code) }
}

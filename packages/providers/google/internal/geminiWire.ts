/**
 * The Gemini API's wire shapes that both the adapter and the emulator use:
 * the REST request bodies (`GenerateContentRequest`, `EmbedContentRequest`),
 * offpeak's batch line (an inline batch element), the JSONL line of an input
 * file, the `google.rpc.Status` codes, and the batch states.
 *
 * A batch line is what the SDK sends for one inlined request:
 * `{"request":{…},"metadata":{"key":"<custom id>"}}`. Sent inline, the batch's
 * create body is the lines joined by commas inside a small wrapper, so its
 * size is the batch's line bytes plus a constant; sent as a file, each line
 * becomes `{"key":"<custom id>","request":{…}}` (13 bytes shorter).
 *
 * @internal
 */

// ===== REST request bodies =====

/** a text part */
export interface Part {
  readonly text: string
}

/** one turn (`role` is `user` or `model`; a system instruction has none) */
export interface Content {
  readonly parts: ReadonlyArray<Part>
  readonly role?: "user" | "model" | undefined
}

/** the `generationConfig` fields offpeak sends */
export interface GenerationConfig {
  temperature?: number
  topP?: number
  maxOutputTokens?: number
  stopSequences?: Array<string>
  seed?: number
  responseMimeType?: string
  responseJsonSchema?: unknown
}

/** `models/{model}:generateContent`'s body, as a batch request carries it */
export interface GenerateContentRequest {
  readonly model: string
  readonly contents: ReadonlyArray<Content>
  readonly systemInstruction?: Content | undefined
  readonly generationConfig: GenerationConfig
}

/** `models/{model}:embedContent`'s body, as an embedding batch request carries it */
export interface EmbedContentRequest {
  readonly model: string
  readonly content: Content
  readonly outputDimensionality?: number | undefined
}

/** offpeak's batch line: one inlined request, its key in `metadata` */
export interface BatchLine {
  readonly request: GenerateContentRequest | EmbedContentRequest
  readonly metadata: { readonly key: string }
}

/** true when a batch request is an embedding request */
export const isEmbed = (request: GenerateContentRequest | EmbedContentRequest): request is EmbedContentRequest =>
  "content" in request

// ===== file lines =====

const PREFIX = "{\"request\":"
const METADATA = ",\"metadata\":{\"key\":"

/**
 * The input-file line of a batch line: `{"key":…,"request":…}`. The line is
 * cut, not parsed (the adapter converts whole files); anything not in the
 * shape offpeak writes is parsed and rebuilt.
 */
export const toFileLine = (line: string): string => {
  const at = line.lastIndexOf(METADATA)
  if (line.startsWith(PREFIX) && at > PREFIX.length && line.endsWith("}}")) {
    const key = line.slice(at + METADATA.length, -2)
    if (key.startsWith("\"") && key.endsWith("\"") && !key.slice(1, -1).includes("\"")) {
      return `{"key":${key},"request":${line.slice(PREFIX.length, at)}}`
    }
  }
  const parsed = JSON.parse(line) as BatchLine
  return JSON.stringify({ key: parsed.metadata.key, request: parsed.request })
}

/** bytes the file form of a batch line saves over the line itself */
export const FILE_LINE_SAVING = (PREFIX.length + METADATA.length + 2) - "{\"key\":,\"request\":}".length

// ===== status codes =====

/** `google.rpc.Code` names by number */
export const CODE_NAMES: Readonly<Record<number, string>> = {
  0: "OK",
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  6: "ALREADY_EXISTS",
  7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  10: "ABORTED",
  11: "OUT_OF_RANGE",
  12: "UNIMPLEMENTED",
  13: "INTERNAL",
  14: "UNAVAILABLE",
  15: "DATA_LOSS",
  16: "UNAUTHENTICATED"
}

/** the HTTP status Google maps each `google.rpc.Code` to */
export const HTTP_OF_CODE: Readonly<Record<number, number>> = {
  1: 499,
  2: 500,
  3: 400,
  4: 504,
  5: 404,
  6: 409,
  7: 403,
  8: 429,
  9: 400,
  10: 409,
  11: 400,
  12: 501,
  13: 500,
  14: 503,
  15: 500,
  16: 401
}

/** the `google.rpc.Code` of a status name (`RESOURCE_EXHAUSTED` → 8), or undefined */
export const codeOfName = (name: string): number | undefined => {
  for (const [code, n] of Object.entries(CODE_NAMES)) if (n === name) return Number(code)
  return undefined
}

/** the status name of an HTTP error status, as Google's JSON errors carry it */
export const statusNameOfHttp = (status: number): string => {
  switch (status) {
    case 400:
      return "INVALID_ARGUMENT"
    case 401:
      return "UNAUTHENTICATED"
    case 403:
      return "PERMISSION_DENIED"
    case 404:
      return "NOT_FOUND"
    case 409:
      return "ABORTED"
    case 429:
      return "RESOURCE_EXHAUSTED"
    case 501:
      return "UNIMPLEMENTED"
    case 503:
      return "UNAVAILABLE"
    case 504:
      return "DEADLINE_EXCEEDED"
    default:
      return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION"
  }
}

// ===== batch states =====

/** the Gemini API's `BatchState` */
export type BatchState =
  | "BATCH_STATE_UNSPECIFIED"
  | "BATCH_STATE_PENDING"
  | "BATCH_STATE_RUNNING"
  | "BATCH_STATE_SUCCEEDED"
  | "BATCH_STATE_FAILED"
  | "BATCH_STATE_CANCELLED"
  | "BATCH_STATE_EXPIRED"

/** `type.googleapis.com` names of the operation metadata and the RetryInfo error detail */
export const TYPES = {
  generateContentBatch: "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
  embedContentBatch: "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch",
  retryInfo: "type.googleapis.com/google.rpc.RetryInfo"
} as const

/** a `google.protobuf.Duration` in JSON (`"1.5s"`) as milliseconds, or undefined */
export const durationMs = (value: unknown): number | undefined => {
  if (typeof value !== "string") return undefined
  const match = /^(\d+(?:\.\d+)?)s$/.exec(value.trim())
  return match === null ? undefined : Math.round(Number(match[1]) * 1000)
}

/** the `retryDelay` of a Google JSON error body's RetryInfo detail, in milliseconds */
export const retryDelayMs = (body: unknown): number | undefined => {
  const details = (body as { error?: { details?: unknown } } | null)?.error?.details
  if (!Array.isArray(details)) return undefined
  for (const detail of details) {
    if (typeof detail === "object" && detail !== null && typeof (detail as { "@type"?: unknown })["@type"] === "string" &&
      ((detail as { "@type": string })["@type"]).endsWith("google.rpc.RetryInfo")) {
      return durationMs((detail as { retryDelay?: unknown }).retryDelay)
    }
  }
  return undefined
}

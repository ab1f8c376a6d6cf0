/**
 * The fingerprint of a request: SHA-256 (64 lowercase hex characters) of its
 * model, kind, parameters, rendered prompt and output schema.
 *
 * It is the `custom_id` sent to providers, the dedupe key inside a run and the
 * key of the result cache across runs. It never depends on the row index, so a
 * resumed run matches its earlier work even when the input changed order. 64
 * hex characters fit every provider's custom-id rule (Anthropic's is
 * `^[A-Za-z0-9_-]{1,64}$`).
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { hash } from "node:crypto"
import type * as Request from "./Request.ts"

/**
 * Bumped when the fingerprint's inputs change shape, so old cache entries are
 * never mistaken for new ones.
 *
 * @since 0.1.0
 * @category constants
 */
export const VERSION = 1

const schemaJsonCache = new WeakMap<object, string>()

/**
 * The canonical JSON text of a schema's JSON Schema document (draft 2020-12).
 * Cached per schema object: a pipeline derives it once, not once per row.
 *
 * @since 0.1.0
 * @category utilities
 */
export const schemaJson = (schema: Schema.Top): string => {
  let text = schemaJsonCache.get(schema)
  if (text === undefined) {
    text = canonicalJson(Schema.toJsonSchemaDocument(schema, { onExcessProperty: "error" }))
    schemaJsonCache.set(schema, text)
  }
  return text
}

/**
 * JSON with object keys sorted and `undefined` members dropped, so equal values
 * always give equal text.
 *
 * @since 0.1.0
 * @category utilities
 */
export const canonicalJson = (value: unknown): string => write(value) ?? "null"

/** object keys repeat from row to row (`role`, `content`, …): each quoted once */
const quotedKeys = new Map<string, string>()
const quoted = (key: string): string => {
  let text = quotedKeys.get(key)
  if (text === undefined) {
    text = JSON.stringify(key)
    if (quotedKeys.size < 10_000) quotedKeys.set(key, text)
  }
  return text
}

/** the canonical text of `value`, or undefined where JSON has none (undefined, functions) */
const write = (value: unknown): string | undefined => {
  if (value === null || typeof value !== "object") return JSON.stringify(value)
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return write((value as { toJSON: () => unknown }).toJSON())
  if (Array.isArray(value)) {
    let out = "["
    for (let i = 0; i < value.length; i++) out += (i === 0 ? "" : ",") + (write(value[i]) ?? "null")
    return out + "]"
  }
  // objects have few keys: an insertion sort in place beats Array#sort's allocations
  const keys = Object.keys(value)
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i]!
    let j = i - 1
    while (j >= 0 && keys[j]! > key) {
      keys[j + 1] = keys[j]!
      j--
    }
    keys[j + 1] = key
  }
  let out = "{"
  let first = true
  for (const key of keys) {
    const text = write((value as Record<string, unknown>)[key])
    if (text === undefined) continue
    out += (first ? "" : ",") + quoted(key) + ":" + text
    first = false
  }
  return out + "}"
}

/**
 * The fingerprint of a request.
 *
 * @example
 * ```ts
 * Fingerprint.of(Request.embedding({ model: "text-embedding-3-small", input: "hello" })) // => "3f1c…" (64 hex)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const of = (request: Request.Request): string => {
  // one string hashed in one call: a hash object fed piece by piece cost twice as much per row
  switch (request._tag) {
    case "Chat": {
      const text = PREFIX + canonicalJson({
        kind: "chat",
        model: request.model,
        params: request.params,
        messages: request.messages
      })
      return hash("sha256", request.output === undefined ? text : text + outputPart(request.output), "hex")
    }
    case "Embedding": {
      return hash("sha256", PREFIX + canonicalJson({
        kind: "embedding",
        model: request.model,
        dimensions: request.dimensions,
        input: request.input
      }), "hex")
    }
  }
}

const PREFIX = `offpeak/v${VERSION}\n`

const outputParts = new WeakMap<object, Map<string, string>>()

/** the hashed text of a request's output: its name and its schema's canonical JSON, made once per schema and name */
const outputPart = (output: { readonly name: string; readonly schema: Schema.Top }): string => {
  let byName = outputParts.get(output.schema)
  if (byName === undefined) outputParts.set(output.schema, byName = new Map())
  let text = byName.get(output.name)
  if (text === undefined) byName.set(output.name, text = `\noutput:${output.name}\n${schemaJson(output.schema)}`)
  return text
}

/**
 * True for strings shaped like a fingerprint.
 *
 * @since 0.1.0
 * @category guards
 */
export const isFingerprint = (u: unknown): u is string => typeof u === "string" && /^[0-9a-f]{64}$/.test(u)

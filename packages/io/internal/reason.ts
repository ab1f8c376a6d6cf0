/**
 * Texts of `Malformed` rows: where the row is, which field is at fault and
 * what was wrong with it. Shared by the CSV and JSONL sources.
 *
 * @internal
 */
import { Result, Schema, SchemaIssue } from "effect"

/** longest `raw` text kept on a Malformed row */
export const MAX_RAW = 1_000

/** longest value quoted in a reason */
const MAX_GOT = 80

/** @internal */
export const truncate = (text: string, max: number = MAX_RAW): string =>
  text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`

/**
 * The raw text of a row kept whole only up to {@link MAX_RAW} characters:
 * `prefix` is its first characters, `total` its length in characters.
 */
export const truncated = (prefix: string, total: number, max: number = MAX_RAW): string =>
  total <= max && prefix.length === total ? prefix : `${prefix.slice(0, max)}… (${total - Math.min(max, prefix.length)} more characters)`

/** a key value as a reason shows it: a string quoted, at most 40 characters */
const showKey = (value: string): string => truncate(JSON.stringify(value), 40)

/**
 * `tickets.csv row 17 (line 19)`, or with the row's key when it could be read:
 * `tickets.csv row 17 (line 19, id "T-0017")`.
 */
export const where = (
  name: string,
  position: number,
  line: number,
  key?: { readonly column: string; readonly value: string } | undefined
): string => `${name} row ${position} (line ${line}${key === undefined ? "" : `, ${key.column} ${showKey(key.value)}`})`

/** `line 4`, `lines 4–9` */
export const lines = (first: number, last: number): string => first >= last ? `line ${first}` : `lines ${first}–${last}`

/** `900 bytes`, `16.0 MiB (16777216 bytes)`; with `detail`: `900 bytes (line 4)`, `16.0 MiB (16777216 bytes, line 4)` */
export const bytes = (n: number, detail?: string): string =>
  n < 1024
    ? `${n} bytes${detail === undefined ? "" : ` (${detail})`}`
    : `${n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1024 * 1024)).toFixed(1)} MiB`} (${n} bytes${
      detail === undefined ? "" : `, ${detail}`
    })`

/** `byte E9 at offset 37` (where bytes that are not UTF-8 are in the file), at most 3 listed */
export const invalidBytes = (invalid: ReadonlyArray<{ readonly offset: number; readonly bytes: string }>): string => {
  const shown = invalid.slice(0, 3).map((i) => `${i.bytes.includes(" ") ? "bytes" : "byte"} ${i.bytes} at offset ${i.offset}`)
  return shown.join(", ") + (invalid.length > 3 ? ` and ${invalid.length - 3} more` : "")
}

/** `priority`, `items[2].name` */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string => {
  let out = ""
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`
    else out += out.length === 0 ? String(key) : `.${String(key)}`
  }
  return out
}

const valueAt = (input: unknown, path: ReadonlyArray<PropertyKey>): { readonly value: unknown } | undefined => {
  let current = input
  for (const key of path) {
    if (current === null || typeof current !== "object" || !Object.hasOwn(current, key)) return undefined
    current = (current as Record<PropertyKey, unknown>)[key]
  }
  return { value: current }
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** a value as a message shows it: JSON, with a bigint (a Postgres `bigint` column) as `5n`, never a throw */
const shownValue = (value: unknown): string => {
  if (typeof value === "bigint") return `${value}n`
  try {
    return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? `${v}n` : v)) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * `field "priority": Expected "low" | "high", got "urgent"`; several issues are
 * joined with `; `.
 */
export const schemaReason = (error: Schema.SchemaError, input: unknown): string =>
  formatter(error.issue).issues.map((issue) => {
    const path = (issue.path ?? []).map((p) => (typeof p === "object" ? p.key : p))
    const field = path.length > 0 ? `field ${JSON.stringify(formatPath(path))}: ` : ""
    const got = path.length > 0 ? valueAt(input, path) : undefined
    const shown = got === undefined ? "" : `, got ${truncate(shownValue(got.value), MAX_GOT)}`
    return `${field}${issue.message}${shown}`
  }).join("; ")

/**
 * A synchronous decoder that reports every failing field. The first attempt
 * stops at the first issue, which keeps Schema's fast path (`errors: "all"`
 * disables it); only a failing row is decoded again to collect all issues.
 */
export const decoder = <S extends Schema.Top & { readonly DecodingServices: never }>(schema: S) => {
  const fast = Schema.decodeUnknownResult(schema)
  const all = Schema.decodeUnknownResult(schema, { errors: "all" })
  return (input: unknown): Result.Result<S["Type"], Schema.SchemaError> => {
    const result = fast(input)
    return Result.isSuccess(result) ? result : all(input)
  }
}

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

/** `tickets.csv row 17 (line 19)` */
export const where = (name: string, position: number, line: number): string => `${name} row ${position} (line ${line})`

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

/**
 * `field "priority": Expected "low" | "high", got "urgent"`; several issues are
 * joined with `; `.
 */
export const schemaReason = (error: Schema.SchemaError, input: unknown): string =>
  formatter(error.issue).issues.map((issue) => {
    const path = (issue.path ?? []).map((p) => (typeof p === "object" ? p.key : p))
    const field = path.length > 0 ? `field ${JSON.stringify(formatPath(path))}: ` : ""
    const got = path.length > 0 ? valueAt(input, path) : undefined
    const shown = got === undefined ? "" : `, got ${truncate(JSON.stringify(got.value) ?? String(got.value), MAX_GOT)}`
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

/**
 * The checkpoint strings of the Postgres source: where a keyset read is, as
 * the text forms of the checkpoint column and of the key of the last row read,
 * `{"col":"2026-11-26 10:00:00.123456+00","key":"42"}`.
 *
 * Earlier versions wrote the column's text form alone (`"42"`,
 * `"2026-11-26 10:00:00+00"`): such a checkpoint still reads, as "after this
 * value" (rows tied with it are not read again, as they were not then). A
 * checkpoint is the new form when it is a JSON object with exactly the string
 * fields `col` and `key`; anything else is a plain value.
 *
 * @internal
 */
import type * as Sql from "./sql.ts"

/** the checkpoint of a row: its checkpoint column's and key's text forms */
export const encode = (column: string, key: string): string =>
  `{"col":${JSON.stringify(column)},"key":${JSON.stringify(key)}}`

const parse = (text: string): Sql.Bound | undefined => {
  if (!text.startsWith("{")) return undefined
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined
  const fields = Object.keys(value)
  const { col, key } = value as { readonly col?: unknown; readonly key?: unknown }
  if (fields.length !== 2 || typeof col !== "string" || typeof key !== "string") return undefined
  return { _tag: "Row", column: col, key }
}

/**
 * The bound a checkpoint stands for: a row position for a checkpoint of this
 * version, a plain value of the column for anything else (an old checkpoint, a
 * number, a bigint, a `Date`).
 */
export const decode = (checkpoint: unknown): Sql.Bound =>
  (typeof checkpoint === "string" ? parse(checkpoint) : undefined) ?? { _tag: "Value", value: checkpoint }

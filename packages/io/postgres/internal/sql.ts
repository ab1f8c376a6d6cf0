/**
 * SQL text helpers of the Postgres connector: quoted identifiers, the text
 * forms of values sent as untyped parameters (the server parses them with the
 * target column's type), and the statements the source and sink run.
 *
 * Values never go into SQL text: every value is a parameter. Identifiers are
 * always quoted, with `"` doubled.
 *
 * @internal
 */

/** PostgreSQL's limit on bind parameters in one statement */
export const MAX_PARAMETERS = 65_535

/** longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes); longer ones are silently cut */
export const MAX_IDENTIFIER_BYTES = 63

/** why an identifier cannot be used, or undefined when it can */
export const identifierProblem = (name: string): string | undefined => {
  if (name.length === 0) return "an empty name"
  if (name.includes("\u0000")) return `${JSON.stringify(name)} holds a NUL character`
  const bytes = Buffer.byteLength(name, "utf8")
  if (bytes > MAX_IDENTIFIER_BYTES) {
    return `${JSON.stringify(name)} is ${bytes} bytes long; PostgreSQL cuts names at ${MAX_IDENTIFIER_BYTES}`
  }
  return undefined
}

/** `we"ird` → `"we""ird"` */
export const quoteIdent = (name: string): string => `"${name.replaceAll("\"", "\"\"")}"`

/** `"schema"."table"`, or `"table"` (found through search_path) */
export const qualified = (schema: string | undefined, table: string): string =>
  schema === undefined ? quoteIdent(table) : `${quoteIdent(schema)}.${quoteIdent(table)}`

/** a user query without trailing semicolons and blanks, so it can be wrapped */
export const trimQuery = (query: string): string => query.replace(/[\s;]+$/u, "").trim()

/** the query with whitespace collapsed, for messages */
export const oneLine = (query: string): string => query.replace(/\s+/gu, " ").trim()

/** the column that carries the checkpoint column's text form in a keyset page's rows */
export const CHECKPOINT_FIELD = "__offpeak_checkpoint"

/** the column that carries the key column's text form in a keyset page's rows */
export const KEY_FIELD = "__offpeak_key"

/** the alias of the user's query when it is wrapped */
const ALIAS = "offpeak_q"

/** the user's query wrapped as a subquery: `(\n<query>\n) AS offpeak_q` */
const wrapped = (query: string): string => `(\n${trimQuery(query)}\n) AS ${ALIAS}`

/** `offpeak_q."name"` */
const ref = (name: string): string => `${ALIAS}.${quoteIdent(name)}`

/**
 * A bound of a keyset read: a row position (the checkpoint column's and the
 * key's text forms: compared as the row value `(col, key)`), or a plain value
 * of the checkpoint column (a checkpoint written by an earlier version, or a
 * value the user gave: compared on the column alone).
 */
export type Bound =
  | { readonly _tag: "Row"; readonly column: string; readonly key: string }
  | { readonly _tag: "Value"; readonly value: unknown }

/** the columns a keyset read orders by */
export interface Keyset {
  readonly query: string
  readonly column: string
  readonly key: string
}

/** SQL text and its parameters */
export interface Query {
  readonly sql: string
  readonly params: ReadonlyArray<unknown>
}

/** a value as a parameter: `Date` as ISO 8601 text (the server parses it with the column's type) */
const param = (value: unknown): unknown => value instanceof Date ? value.toISOString() : value

/** `WHERE` conditions keeping the rows after `after` and at or before `upTo` (parameters numbered from `$1`) */
const range = (
  keyset: Keyset,
  bounds: { readonly after?: Bound | undefined; readonly upTo?: Bound | undefined }
): Query => {
  const conditions: Array<string> = []
  const params: Array<unknown> = []
  const column = ref(keyset.column)
  const key = ref(keyset.key)
  const add = (bound: Bound, op: ">" | "<=") => {
    if (bound._tag === "Row") {
      params.push(bound.column, bound.key)
      conditions.push(`(${column}, ${key}) ${op} ($${params.length - 1}, $${params.length})`)
    } else {
      params.push(param(bound.value))
      conditions.push(`${column} ${op} $${params.length}`)
    }
  }
  if (bounds.after !== undefined) add(bounds.after, ">")
  if (bounds.upTo !== undefined) add(bounds.upTo, "<=")
  return { sql: conditions.length === 0 ? "" : ` WHERE ${conditions.join(" AND ")}`, params }
}

/**
 * One keyset page: the rows of the query after `after` and at or before
 * `upTo`, in `(column, key)` order, at most `limit`, each with the text forms
 * of its checkpoint column and key ({@link CHECKPOINT_FIELD}, {@link KEY_FIELD}).
 */
export const keysetPage = (
  keyset: Keyset,
  bounds: { readonly after?: Bound | undefined; readonly upTo?: Bound | undefined },
  limit: number
): Query => {
  const where = range(keyset, bounds)
  const column = ref(keyset.column)
  const key = ref(keyset.key)
  return {
    sql: `SELECT ${ALIAS}.*, (${column})::text AS ${CHECKPOINT_FIELD}, (${key})::text AS ${KEY_FIELD} FROM ${
      wrapped(keyset.query)
    }${where.sql} ORDER BY ${column}, ${key} LIMIT ${limit}`,
    params: where.params
  }
}

/**
 * The last row of the query in `(column, key)` order: its text forms as
 * `col` and `key`. A descending scan puts NULLs first, so a NULL in either
 * column shows here.
 */
export const keysetHigh = (keyset: Keyset): string => {
  const column = ref(keyset.column)
  const key = ref(keyset.key)
  return `SELECT (${column})::text AS col, (${key})::text AS key FROM ${wrapped(keyset.query)} ORDER BY ${column} DESC, ${key} DESC LIMIT 1`
}

/** how many rows of the query lie after `after` and at or before `upTo` */
export const keysetCount = (
  keyset: Keyset,
  bounds: { readonly after?: Bound | undefined; readonly upTo?: Bound | undefined }
): Query => {
  const where = range(keyset, bounds)
  return { sql: `SELECT count(*) AS n FROM ${wrapped(keyset.query)}${where.sql}`, params: where.params }
}

/**
 * A row whose checkpoint column or key is NULL (it has no place in the
 * order): the text forms of its key and column (`key`, `col`); no row when
 * there is none.
 */
export const keysetNulls = (keyset: Keyset): string => {
  const column = ref(keyset.column)
  const key = ref(keyset.key)
  return `SELECT (${key})::text AS key, (${column})::text AS col FROM ${
    wrapped(keyset.query)
  } WHERE ${column} IS NULL OR ${key} IS NULL LIMIT 1`
}

/** how many rows the query returns */
export const countQuery = (query: string): string => `SELECT count(*) AS n FROM ${wrapped(query)}`

// ===== Values =====

/** a number as PostgreSQL reads it (`NaN`, `Infinity`, `-Infinity` included: `String` writes them so) */
const numberText = (n: number): string => String(n)

const rawJSON = (JSON as unknown as { readonly rawJSON: (text: string) => unknown }).rawJSON

/** JSON text; bigints as JSON numbers with all their digits */
export const jsonText = (value: unknown): string =>
  JSON.stringify(value, (_, v) => typeof v === "bigint" ? rawJSON(v.toString()) : v) ?? "null"

/** a scalar's text for a non-JSON column */
export const scalarText = (value: unknown): string | null => {
  if (value === null || value === undefined) return null
  switch (typeof value) {
    case "string":
      return value
    case "number":
      return numberText(value)
    case "bigint":
    case "boolean":
      return String(value)
  }
  if (value instanceof Date) return value.toISOString()
  return jsonText(value)
}

const arrayElement = (value: unknown): string => {
  if (value === null || value === undefined) return "NULL"
  if (Array.isArray(value) || ArrayBuffer.isView(value)) return arrayText(value as ArrayLike<unknown>)
  const text = scalarText(value)!
  return `"${text.replaceAll("\\", "\\\\").replaceAll("\"", "\\\"")}"`
}

/** a PostgreSQL array literal: `{"a","b \"c\"",NULL}`, nested arrays as nested braces */
export const arrayText = (values: ArrayLike<unknown>): string => {
  const parts: Array<string> = []
  for (let i = 0; i < values.length; i++) parts.push(arrayElement(values[i]))
  return `{${parts.join(",")}}`
}

/** the numbers of a vector value (an array or a typed array of numbers) */
export const vectorNumbers = (value: unknown): ReadonlyArray<number> | string => {
  if (Array.isArray(value)) {
    for (const n of value) if (typeof n !== "number") return `expected numbers, got ${jsonText(n).slice(0, 40)}`
    return value as ReadonlyArray<number>
  }
  if (value instanceof Float32Array || value instanceof Float64Array) return Array.from(value)
  return `expected an array of numbers, got ${typeof value === "string" ? "a string" : jsonText(value).slice(0, 40)}`
}

/** `[1,2.5,3]`: pgvector's text form (`join` writes each number as `String` does: `NaN`, `Infinity` as PostgreSQL reads them) */
export const vectorText = (values: ReadonlyArray<number>): string => `[${values.join(",")}]`

/** `{1,2.5,3}`: the text form of a `real[]` */
export const realArrayText = (values: ReadonlyArray<number>): string => `{${values.join(",")}}`

/** a value shown in a message: strings quoted, others plainly, cut at `max` characters */
export const showValue = (value: unknown, max = 80): string => {
  const text = typeof value === "string"
    ? JSON.stringify(value)
    : value instanceof Date
    ? value.toISOString()
    : typeof value === "bigint"
    ? value.toString()
    : jsonText(value)
  return text.length <= max ? text : `${text.slice(0, max)}…`
}

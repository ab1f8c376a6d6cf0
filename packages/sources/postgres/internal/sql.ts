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

/** the column that carries the checkpoint's text form in the cursor's rows */
export const CHECKPOINT_FIELD = "__offpeak_checkpoint"

/**
 * The statement behind the source's cursor: the query as it is, or wrapped to
 * add the checkpoint's text form, keep the rows after `$1` and order by the
 * checkpoint column.
 */
export const sourceQuery = (options: {
  readonly query: string
  readonly checkpoint?: string | undefined
  readonly hasAfter: boolean
}): string => {
  const query = trimQuery(options.query)
  if (options.checkpoint === undefined) return query
  const column = `offpeak_q.${quoteIdent(options.checkpoint)}`
  const where = options.hasAfter ? ` WHERE ${column} > $1` : ""
  return `SELECT offpeak_q.*, (${column})::text AS ${CHECKPOINT_FIELD} FROM (\n${query}\n) AS offpeak_q${where} ORDER BY ${column}`
}

// ===== Values =====

/** a number as PostgreSQL reads it (`NaN`, `Infinity`, `-Infinity` included) */
const numberText = (n: number): string => Number.isNaN(n) ? "NaN" : String(n)

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

/** `[1,2.5,3]`: pgvector's text form */
export const vectorText = (values: ReadonlyArray<number>): string => `[${values.map(numberText).join(",")}]`

/** `{1,2.5,3}`: the text form of a `real[]` */
export const realArrayText = (values: ReadonlyArray<number>): string => `{${values.map(numberText).join(",")}}`

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

/**
 * Values between BigQuery and JavaScript: REST rows (`{ f: [{ v }] }`) to
 * typed records for the source, records to NDJSON for the sink's loads, and
 * table schemas derived from an Effect Schema or from rows.
 *
 * @internal
 */
import type { Schema, SchemaAST } from "effect"

/** a BigQuery schema field (REST shape) */
export interface Field {
  readonly name: string
  readonly type: string
  readonly mode?: string | undefined
  readonly fields?: ReadonlyArray<Field> | undefined
}

/** how INT64 and TIMESTAMP come out of the source */
export interface ReadOptions {
  readonly int64: "number" | "bigint" | "string"
  readonly timestamps: "string" | "date" | "micros"
}

const pad = (n: number | bigint, width: number) => String(n).padStart(width, "0")

/** microseconds since the epoch → `2024-01-02T03:04:05.123456Z` */
export const isoOfMicros = (micros: bigint): string => {
  const DAY = 86_400_000_000n
  let days = micros / DAY
  let rest = micros % DAY
  if (rest < 0n) {
    rest += DAY
    days -= 1n
  }
  const d = new Date(Number(days) * 86_400_000)
  const s = rest / 1_000_000n
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}T${pad(s / 3600n, 2)}:${pad((s / 60n) % 60n, 2)}:${pad(s % 60n, 2)}.${pad(rest % 1_000_000n, 6)}Z`
}

/** a REST TIMESTAMP value (int64 microseconds, or float seconds) → microseconds */
export const microsOf = (v: string): bigint => {
  if (/^-?\d+$/.test(v)) return BigInt(v)
  // float seconds (`1.7040672001234E9`): exact to the microsecond for today's dates
  return BigInt(Math.round(Number(v) * 1e6))
}

/** a value that cannot be read as asked: the field's path and why */
export class ValueProblem extends Error {
  readonly field: string
  constructor(field: string, message: string) {
    super(message)
    this.field = field
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

const decodeScalar = (field: Field, v: unknown, options: ReadOptions, path: string): unknown => {
  if (v === null || v === undefined) return null
  const s = String(v)
  switch (field.type) {
    case "INTEGER":
    case "INT64": {
      if (options.int64 === "string") return s
      const n = BigInt(s)
      if (options.int64 === "bigint") return n
      if (n > MAX_SAFE || n < -MAX_SAFE) {
        throw new ValueProblem(path, `INT64 ${s} is beyond ±2^53 and would lose precision as a number: read it with int64: "bigint" or "string"`)
      }
      return Number(n)
    }
    case "FLOAT":
    case "FLOAT64":
      return Number(s)
    case "BOOLEAN":
    case "BOOL":
      return s === "true"
    case "BYTES":
      return new Uint8Array(Buffer.from(s, "base64"))
    case "TIMESTAMP": {
      const micros = microsOf(s)
      const ms = micros / 1000n - (micros % 1000n < 0n ? 1n : 0n) // floor, for times before 1970
      return options.timestamps === "micros" ? micros : options.timestamps === "date" ? new Date(Number(ms)) : isoOfMicros(micros)
    }
    case "JSON":
      try {
        return JSON.parse(s)
      } catch {
        throw new ValueProblem(path, `JSON value ${s.slice(0, 80)} does not parse`)
      }
    default:
      // STRING, NUMERIC, BIGNUMERIC (exact decimal text), DATE, DATETIME, TIME, GEOGRAPHY, INTERVAL
      return s
  }
}

const decodeField = (field: Field, cell: unknown, options: ReadOptions, path: string): unknown => {
  const v = (cell as { v?: unknown } | null)?.v ?? null
  if (field.mode === "REPEATED") {
    if (v === null) return []
    const element: Field = { ...field, mode: "NULLABLE" }
    return (v as Array<unknown>).map((item, i) => decodeField(element, item, options, `${path}[${i}]`))
  }
  if (field.type === "RECORD" || field.type === "STRUCT") {
    if (v === null) return null
    return decodeRecord(field.fields ?? [], v, options, path)
  }
  return decodeScalar(field, v, options, path)
}

/** one REST row (`{ f: [{ v }] }`) → a record keyed by column name; throws `ValueProblem` */
export const decodeRecord = (fields: ReadonlyArray<Field>, row: unknown, options: ReadOptions, path = ""): Record<string, unknown> => {
  const cells = (row as { f?: Array<unknown> } | null)?.f ?? []
  const out: Record<string, unknown> = {}
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!
    out[f.name] = decodeField(f, cells[i], options, path === "" ? f.name : `${path}.${f.name}`)
  }
  return out
}

/** a row's values as plain JSON text for a dead letter (strings as the service sent them) */
export const rawOf = (fields: ReadonlyArray<Field>, row: unknown): string => {
  const plain = (field: Field, cell: unknown): unknown => {
    const v = (cell as { v?: unknown } | null)?.v ?? null
    if (v === null) return null
    if (field.mode === "REPEATED") return (v as Array<unknown>).map((x) => plain({ ...field, mode: "NULLABLE" }, x))
    if (field.type === "RECORD" || field.type === "STRUCT") {
      const cells = (v as { f?: Array<unknown> }).f ?? []
      return Object.fromEntries((field.fields ?? []).map((f, i) => [f.name, plain(f, cells[i])]))
    }
    return v
  }
  const cells = (row as { f?: Array<unknown> } | null)?.f ?? []
  return JSON.stringify(Object.fromEntries(fields.map((f, i) => [f.name, plain(f, cells[i])])))
}

/** the raw REST text of a column of a row (for checkpoints), or undefined when NULL */
export const cellText = (fields: ReadonlyArray<Field>, row: unknown, column: string): string | undefined => {
  const i = fields.findIndex((f) => f.name.toLowerCase() === column.toLowerCase())
  const v = ((row as { f?: Array<{ v?: unknown }> }).f ?? [])[i]?.v
  return v === null || v === undefined ? undefined : String(v)
}

// ===== the sink's NDJSON =====

/** a record as one NDJSON line of a load: bigint as a decimal string, bytes as base64, other typed arrays (Float32Array embeddings) as arrays, dates as ISO 8601, non-finite numbers as text */
export const ndjsonLine = (row: unknown): string =>
  JSON.stringify(row, function(this: unknown, _key, value) {
    if (typeof value === "bigint") return value.toString()
    if (typeof value === "number" && !Number.isFinite(value)) return Number.isNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity"
    if (value instanceof Uint8Array) return Buffer.from(value).toString("base64")
    if (ArrayBuffer.isView(value) && !(value instanceof DataView)) return Array.from(value as unknown as ArrayLike<number | bigint>, (x) => (typeof x === "bigint" ? x.toString() : x))
    if (typeof value === "object" && value !== null && (value as { type?: unknown }).type === "Buffer" && Array.isArray((value as { data?: unknown }).data)) {
      return Buffer.from((value as { data: Array<number> }).data).toString("base64")
    }
    return value
  })

// ===== schemas =====

const representation = (ast: SchemaAST.AST): string | undefined =>
  (ast.annotations as { representation?: { id?: string } } | undefined)?.representation?.id

const isInt = (ast: SchemaAST.AST) => (ast.checks ?? []).some((c) => (c.annotations as { representation?: { id?: string } } | undefined)?.representation?.id === "effect/schema/isInt")

/** the BigQuery type and mode of an Effect Schema AST node (the Type side), or why there is none */
const fieldOfAst = (name: string, ast: SchemaAST.AST, required: boolean): Field | string => {
  switch (ast._tag) {
    case "String":
    case "TemplateLiteral":
      return { name, type: "STRING", mode: required ? "REQUIRED" : "NULLABLE" }
    case "Number":
      return { name, type: isInt(ast) ? "INTEGER" : "FLOAT", mode: required ? "REQUIRED" : "NULLABLE" }
    case "Boolean":
      return { name, type: "BOOLEAN", mode: required ? "REQUIRED" : "NULLABLE" }
    case "BigInt":
      return { name, type: "INTEGER", mode: required ? "REQUIRED" : "NULLABLE" }
    case "Literal": {
      const t = typeof ast.literal
      const type = t === "string" ? "STRING" : t === "number" ? (Number.isInteger(ast.literal) ? "INTEGER" : "FLOAT") : t === "boolean" ? "BOOLEAN" : t === "bigint" ? "INTEGER" : undefined
      return type === undefined ? `column ${name}: a literal of type ${t} has no BigQuery type` : { name, type, mode: required ? "REQUIRED" : "NULLABLE" }
    }
    case "Enum":
      return { name, type: ast.enums.every(([, v]) => typeof v === "number") ? "INTEGER" : "STRING", mode: required ? "REQUIRED" : "NULLABLE" }
    case "Declaration": {
      const id = representation(ast)
      if (id === "effect/schema/Date" || id === "effect/schema/DateTimeUtc") return { name, type: "TIMESTAMP", mode: required ? "REQUIRED" : "NULLABLE" }
      if (id === "effect/schema/Uint8Array") return { name, type: "BYTES", mode: required ? "REQUIRED" : "NULLABLE" }
      return { name, type: "JSON", mode: "NULLABLE" }
    }
    case "Unknown":
    case "Any":
    case "ObjectKeyword":
      return { name, type: "JSON", mode: "NULLABLE" }
    case "Union": {
      const members = ast.types.filter((t) => t._tag !== "Null" && t._tag !== "Undefined")
      const nullable = members.length < ast.types.length
      const fields = members.map((m) => fieldOfAst(name, m, false))
      const first = fields[0]
      if (first === undefined) return { name, type: "STRING", mode: "NULLABLE" }
      if (typeof first === "string") return first
      const same = fields.every((f) => typeof f !== "string" && f.type === first.type && (f.mode === "REPEATED") === (first.mode === "REPEATED"))
      if (!same) {
        // INTEGER | FLOAT is FLOAT; other mixtures are JSON
        const numeric = fields.every((f) => typeof f !== "string" && (f.type === "INTEGER" || f.type === "FLOAT") && f.mode !== "REPEATED")
        return { name, type: numeric ? "FLOAT" : "JSON", mode: "NULLABLE" }
      }
      return { ...first, mode: first.mode === "REPEATED" ? "REPEATED" : required && !nullable ? "REQUIRED" : "NULLABLE" }
    }
    case "Arrays": {
      const element = ast.rest[0] ?? ast.elements[0]
      if (element === undefined) return { name, type: "JSON", mode: "NULLABLE" }
      const inner = fieldOfAst(name, element, false)
      if (typeof inner === "string") return inner
      if (inner.mode === "REPEATED") return { name, type: "JSON", mode: "NULLABLE" } // BigQuery has no ARRAY of ARRAY
      return { ...inner, mode: "REPEATED" }
    }
    case "Objects": {
      if (ast.propertySignatures.length === 0) return { name, type: "JSON", mode: "NULLABLE" }
      const fields = fieldsOfObjects(ast)
      return typeof fields === "string" ? fields : { name, type: "RECORD", mode: required ? "REQUIRED" : "NULLABLE", fields }
    }
    case "Suspend":
      return `column ${name}: recursive schemas have no BigQuery type`
    default:
      return `column ${name}: a ${ast._tag} has no BigQuery type`
  }
}

const fieldsOfObjects = (ast: SchemaAST.Objects): ReadonlyArray<Field> | string => {
  const out: Array<Field> = []
  for (const ps of ast.propertySignatures) {
    const name = String(ps.name)
    const optional = ps.type.context?.isOptional === true
    const f = fieldOfAst(name, ps.type, !optional)
    if (typeof f === "string") return f
    out.push(f)
  }
  return out
}

/** the table schema of an Effect Schema of rows (a struct): its Type side, NULLABLE unless a key must be present */
export const fieldsOfSchema = (schema: Schema.Top): ReadonlyArray<Field> | string => {
  let ast = schema.ast
  while (ast._tag === "Suspend") ast = ast.thunk()
  if (ast._tag !== "Objects") return "the row schema must be a struct (Schema.Struct)"
  const fields = fieldsOfObjects(ast)
  // REQUIRED is strict in BigQuery (a later schema change cannot relax it back cheaply): keep only what the schema requires
  return fields
}

/**
 * A table schema guessed from rows: strings STRING, booleans BOOLEAN, bigints
 * INTEGER, numbers FLOAT (INTEGER for key columns whose values are all
 * integers), Dates TIMESTAMP, bytes BYTES, arrays REPEATED, objects RECORD,
 * columns only ever null STRING. Every column NULLABLE.
 */
export const fieldsOfRows = (rows: ReadonlyArray<unknown>, keys: ReadonlyArray<string>): ReadonlyArray<Field> | string => {
  const names: Array<string> = []
  const values = new Map<string, Array<unknown>>()
  for (const row of rows) {
    if (typeof row !== "object" || row === null || Array.isArray(row)) return "rows must be objects"
    for (const [k, v] of Object.entries(row)) {
      if (!values.has(k)) {
        names.push(k)
        values.set(k, [])
      }
      if (v !== null && v !== undefined) values.get(k)!.push(v)
    }
  }
  const typeOf = (name: string, vs: ReadonlyArray<unknown>, integerNumbers: boolean): Field | string => {
    const v = vs[0]
    if (v === undefined) return { name, type: "STRING", mode: "NULLABLE" }
    if (typeof v === "string") return { name, type: "STRING", mode: "NULLABLE" }
    if (typeof v === "boolean") return { name, type: "BOOLEAN", mode: "NULLABLE" }
    if (typeof v === "bigint") return { name, type: "INTEGER", mode: "NULLABLE" }
    if (typeof v === "number") return { name, type: integerNumbers && vs.every((x) => typeof x === "number" && Number.isSafeInteger(x)) ? "INTEGER" : "FLOAT", mode: "NULLABLE" }
    if (v instanceof Date) return { name, type: "TIMESTAMP", mode: "NULLABLE" }
    if (v instanceof Uint8Array) return { name, type: "BYTES", mode: "NULLABLE" }
    if (Array.isArray(v)) {
      const items = vs.flatMap((x) => (Array.isArray(x) ? x.filter((i) => i !== null && i !== undefined) : []))
      if (items.some(Array.isArray)) return { name, type: "JSON", mode: "NULLABLE" }
      const inner = typeOf(name, items, false)
      return typeof inner === "string" ? inner : { ...inner, mode: "REPEATED" }
    }
    if (typeof v === "object") {
      const nested = fieldsOfRows(vs, [])
      return typeof nested === "string" ? nested : nested.length === 0 ? { name, type: "JSON", mode: "NULLABLE" } : { name, type: "RECORD", mode: "NULLABLE", fields: nested }
    }
    return `column ${name}: a ${typeof v} has no BigQuery type`
  }
  const out: Array<Field> = []
  for (const name of names) {
    const f = typeOf(name, values.get(name)!, keys.includes(name))
    if (typeof f === "string") return f
    out.push(f)
  }
  return out
}

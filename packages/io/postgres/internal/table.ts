/**
 * What the sink learns about its table once: whether pgvector is installed,
 * the table's columns and their types (created first with `createTable`), how
 * each column's values are encoded, and the upsert statement.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import type { SqlError } from "effect/sql"
import * as Sql from "./sql.ts"

/** a column of the target table */
export interface Column {
  readonly name: string
  /** `format_type`: `vector(3)`, `real[]`, `text`, `character varying(20)` */
  readonly type: string
  /** the type without its modifier: `vector`, `character varying` (what a cast may name without cutting values) */
  readonly base: string
  readonly typname: string
  /** `pg_type.typcategory`: `A` for arrays */
  readonly category: string
  /** the element type's name for arrays */
  readonly element: string | null
}

/** how the vectors of a vector column are written */
export type VectorMode = "vector" | "real[]"

/**
 * The text forms of one column's values, or a reason the value cannot be
 * written (a NUL character, a string over the column's length, a vector that
 * is not numbers): the sink refuses that row, naming the column.
 */
export type Encoder = (value: unknown) => { readonly ok: unknown } | { readonly error: string }

/** everything a write needs, learnt once */
export interface Plan {
  readonly table: string
  readonly columns: ReadonlyArray<string>
  readonly keys: ReadonlyArray<string>
  readonly encoders: ReadonlyArray<Encoder>
  readonly vectorModes: ReadonlyMap<string, VectorMode>
  /** what comes before the row tuples: `INSERT INTO "t" ("a", "b") VALUES `, or `UPDATE … FROM (VALUES ` */
  readonly insert: string
  /** what comes after them: ` ON CONFLICT ("a") DO UPDATE SET "b" = EXCLUDED."b"`, or `) AS v (…) WHERE …` */
  readonly conflict: string
  /** a cast per column after each placeholder (`::integer`), where the statement does not type them */
  readonly casts: ReadonlyArray<string>
  readonly pgvector: string | null
}

/** what the plan was asked for */
export interface Options {
  readonly schema: string | undefined
  readonly table: string
  readonly keys: ReadonlyArray<string>
  readonly columns: ReadonlyArray<string>
  readonly vectorColumns: ReadonlyArray<string>
  readonly createTable: Readonly<Record<string, string>> | undefined
  /** `upsert` inserts or replaces rows; `update` only writes the columns of rows already there */
  readonly mode: "upsert" | "update"
}

/** a problem the user must fix (no SQL error behind it) */
export class PlanProblem {
  readonly _tag = "PlanProblem"
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

const VECTOR_TYPE = /^\s*vector\s*(\(\s*\d+\s*\))?\s*$/iu

/** the installed pgvector version, or null */
export const pgvectorVersion = (client: PgClient.PgClient): Effect.Effect<string | null, SqlError.SqlError> =>
  Effect.map(
    client.unsafe<{ extversion: string }>("SELECT extversion FROM pg_extension WHERE extname = 'vector'"),
    (rows) => rows[0]?.extversion ?? null
  )

/** the table's columns in order; none when it does not exist */
export const columnsOf = (
  client: PgClient.PgClient,
  table: string
): Effect.Effect<ReadonlyArray<Column>, SqlError.SqlError> =>
  client.unsafe<Column>(
    `SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type,
            format_type(a.atttypid, NULL) AS base, t.typname::text AS typname,
            t.typcategory::text AS category, e.typname::text AS element
     FROM pg_attribute a
     JOIN pg_type t ON t.oid = a.atttypid
     LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum`,
    [table]
  )

/** `CREATE TABLE IF NOT EXISTS`, with `vector(n)` types turned into `real[]` without pgvector */
export const createStatement = (
  options: Options,
  pgvector: string | null
): string | PlanProblem => {
  const declared = options.createTable!
  const names = Object.keys(declared)
  if (names.length === 0) return new PlanProblem("createTable.columns is empty")
  for (const name of [...options.keys, ...options.vectorColumns]) {
    if (!Object.hasOwn(declared, name)) return new PlanProblem(`createTable.columns has no type for column ${JSON.stringify(name)}`)
  }
  const defs = names.map((name) => {
    const type = declared[name]!
    const written = pgvector === null && options.vectorColumns.includes(name) && VECTOR_TYPE.test(type) ? "real[]" : type
    return `${Sql.quoteIdent(name)} ${written}`
  })
  return `CREATE TABLE IF NOT EXISTS ${Sql.qualified(options.schema, options.table)} (${defs.join(", ")}, PRIMARY KEY (${
    options.keys.map(Sql.quoteIdent).join(", ")
  }))`
}

/** why a text parameter cannot be sent: PostgreSQL text cannot hold U+0000 */
const nulProblem = (text: unknown): string | undefined =>
  typeof text === "string" && text.includes("\u0000")
    ? `the value holds a NUL character (\\u0000) at offset ${text.indexOf("\u0000")}, which PostgreSQL cannot store in text`
    : undefined

/** true when a string anywhere in a JSON value (keys included) holds U+0000 */
const hasNul = (value: unknown, depth = 0): boolean => {
  if (typeof value === "string") return value.includes("\u0000")
  if (value === null || typeof value !== "object" || depth > 256) return false
  if (Array.isArray(value)) return value.some((v) => hasNul(v, depth + 1))
  if (value instanceof Date || ArrayBuffer.isView(value)) return false
  for (const [k, v] of Object.entries(value)) if (k.includes("\u0000") || hasNul(v, depth + 1)) return true
  return false
}

/** checks a parameter before it is sent */
const checked = (encoder: Encoder, check: (text: unknown) => string | undefined): Encoder => (value) => {
  const encoded = encoder(value)
  if ("error" in encoded) return encoded
  const problem = check(encoded.ok)
  return problem === undefined ? encoded : { error: problem }
}

const plain: Encoder = (value) => ({ ok: Sql.scalarText(value) })

const json: Encoder = (value) => ({ ok: value === null || value === undefined ? null : Sql.jsonText(value) })

/** jsonb refuses `\u0000` in strings (json keeps it: it stores the text) */
const jsonb: Encoder = (value) =>
  hasNul(value)
    ? { error: "a string in the value holds a NUL character (\\u0000), which jsonb cannot store (json can)" }
    : json(value)

const binary: Encoder = (value) => ({ ok: value instanceof Uint8Array ? value : Sql.scalarText(value) })

const array: Encoder = (value) => {
  if (value === null || value === undefined) return { ok: null }
  if (Array.isArray(value) || ArrayBuffer.isView(value)) return { ok: Sql.arrayText(value as ArrayLike<unknown>) }
  return { ok: Sql.scalarText(value) }
}

const vector = (mode: VectorMode): Encoder => (value) => {
  if (value === null || value === undefined) return { ok: null }
  const numbers = Sql.vectorNumbers(value)
  if (typeof numbers === "string") return { error: numbers }
  return { ok: mode === "vector" ? Sql.vectorText(numbers) : Sql.realArrayText(numbers) }
}

/** the length `n` of a `character varying(n)` or `character(n)` column */
export const lengthOf = (column: Column): number | undefined => {
  if (column.typname !== "varchar" && column.typname !== "bpchar") return undefined
  const match = /\((\d+)\)$/u.exec(column.type)
  return match === null ? undefined : Number(match[1])
}

/**
 * Why a text is too long for a column of `max` characters, as PostgreSQL
 * counts them (code points; characters past the length that are all spaces
 * are cut without an error).
 */
export const lengthProblem = (text: unknown, max: number, type: string): string | undefined => {
  if (typeof text !== "string" || text.length <= max) return undefined
  let count = 0
  let excessAllSpaces = true
  for (const char of text) {
    count++
    if (count > max && char !== " ") excessAllSpaces = false
  }
  return count <= max || excessAllSpaces ? undefined : `the value is ${count} characters long; the column is ${type}`
}

/** how values of a column are sent, and what is refused before sending */
export const encoderFor = (column: Column, mode: VectorMode | undefined): Encoder => {
  if (mode !== undefined) return vector(mode)
  if (column.typname === "json") return json
  if (column.typname === "jsonb") return jsonb
  if (column.typname === "bytea") return checked(binary, nulProblem)
  if (column.category === "A") return checked(array, nulProblem)
  const max = lengthOf(column)
  return checked(
    plain,
    max === undefined ? nulProblem : (text) => nulProblem(text) ?? lengthProblem(text, max, column.type)
  )
}

/** the vector mode of a vector column, or why it cannot hold vectors */
export const vectorModeOf = (column: Column): VectorMode | PlanProblem => {
  if (column.typname === "vector") return "vector"
  if (column.category === "A" && (column.element === "float4" || column.element === "float8")) return "real[]"
  return new PlanProblem(
    `column ${JSON.stringify(column.name)} is ${column.type}: a vector column must be vector(n) (pgvector) or real[]`
  )
}

/** checks the columns against the table and builds the plan */
export const plan = (
  options: Options,
  found: ReadonlyArray<Column>,
  pgvector: string | null
): Plan | PlanProblem => {
  const table = Sql.qualified(options.schema, options.table)
  if (found.length === 0) {
    return new PlanProblem(`table ${table} does not exist (pass createTable to create it)`)
  }
  const byName = new Map(found.map((c) => [c.name, c]))
  const missing = options.columns.filter((c) => !byName.has(c))
  if (missing.length > 0) {
    return new PlanProblem(
      `table ${table} has no column ${missing.map((c) => JSON.stringify(c)).join(", ")} (it has ${
        found.map((c) => JSON.stringify(c.name)).join(", ")
      })`
    )
  }
  const notWritten = options.keys.filter((k) => !options.columns.includes(k))
  if (notWritten.length > 0) {
    return new PlanProblem(`key column ${notWritten.map((c) => JSON.stringify(c)).join(", ")} is not among the columns written`)
  }
  const vectorModes = new Map<string, VectorMode>()
  for (const name of options.vectorColumns) {
    const column = byName.get(name)
    if (column === undefined) return new PlanProblem(`table ${table} has no vector column ${JSON.stringify(name)}`)
    const mode = vectorModeOf(column)
    if (mode instanceof PlanProblem) return mode
    vectorModes.set(name, mode)
  }
  const quoted = options.columns.map(Sql.quoteIdent)
  const others = options.columns.filter((c) => !options.keys.includes(c))
  const encoders = options.columns.map((c) => encoderFor(byName.get(c)!, vectorModes.get(c)))
  if (options.mode === "update") {
    if (others.length === 0) return new PlanProblem("mode update needs a column to write besides the key")
    // the VALUES list types nothing: each placeholder is cast to its column's type (from the catalog)
    return {
      table,
      columns: options.columns,
      keys: options.keys,
      encoders,
      vectorModes,
      insert: `UPDATE ${table} AS "t" SET ${
        others.map((c) => `${Sql.quoteIdent(c)} = "v".${Sql.quoteIdent(c)}`).join(", ")
      } FROM (VALUES `,
      conflict: `) AS "v" (${quoted.join(", ")}) WHERE ${
        options.keys.map((k) => `"t".${Sql.quoteIdent(k)} = "v".${Sql.quoteIdent(k)}`).join(" AND ")
      }`,
      // the type without its modifier: `::character varying(5)` would cut a longer value silently, while the
      // assignment to the column refuses it
      casts: options.columns.map((c) => `::${byName.get(c)!.base}`),
      pgvector
    }
  }
  return {
    table,
    columns: options.columns,
    keys: options.keys,
    encoders,
    vectorModes,
    insert: `INSERT INTO ${table} (${quoted.join(", ")}) VALUES `,
    conflict: ` ON CONFLICT (${options.keys.map(Sql.quoteIdent).join(", ")}) ${
      others.length === 0 ? "DO NOTHING" : `DO UPDATE SET ${others.map((c) => `${Sql.quoteIdent(c)} = EXCLUDED.${Sql.quoteIdent(c)}`).join(", ")}`
    }`,
    casts: options.columns.map(() => ""),
    pgvector
  }
}

/** most rows in one statement */
export const MAX_ROWS = 1_000

/** a statement is cut once its values hold about this many characters */
export const MAX_CHARS = 8 * 1024 * 1024

/** one statement: its SQL and parameters, for `rows` rows from the `first` (indexes into the rows given) */
export interface Statement {
  readonly sql: string
  readonly params: ReadonlyArray<unknown>
  readonly first: number
  readonly rows: number
}

const sizeOf = (param: unknown): number =>
  typeof param === "string" ? param.length : param instanceof Uint8Array ? param.byteLength : 8

/**
 * The statements writing `rows` (already encoded, one array of parameters per
 * row): at most {@link MAX_ROWS} rows, {@link Sql.MAX_PARAMETERS} parameters
 * and about {@link MAX_CHARS} characters of values each.
 */
export const statements = (plan: Plan, rows: ReadonlyArray<ReadonlyArray<unknown>>): Array<Statement> => {
  const width = plan.columns.length
  const perStatement = Math.max(1, Math.min(MAX_ROWS, Math.floor(Sql.MAX_PARAMETERS / width)))
  const out: Array<Statement> = []
  let params: Array<unknown> = []
  let tuples: Array<string> = []
  let chars = 0
  let first = 0
  const flush = () => {
    if (tuples.length === 0) return
    out.push({ sql: `${plan.insert}${tuples.join(", ")}${plan.conflict}`, params, first, rows: tuples.length })
    first += tuples.length
    params = []
    tuples = []
    chars = 0
  }
  for (const row of rows) {
    const placeholders: Array<string> = []
    for (let i = 0; i < row.length; i++) {
      const value = row[i]
      params.push(value)
      chars += sizeOf(value)
      placeholders.push(`$${params.length}${plan.casts[i] ?? ""}`)
    }
    tuples.push(`(${placeholders.join(", ")})`)
    if (tuples.length >= perStatement || chars >= MAX_CHARS) flush()
  }
  flush()
  return out
}

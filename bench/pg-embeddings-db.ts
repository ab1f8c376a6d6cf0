/**
 * The database side of the Postgres → embeddings → Postgres scenario, for bench/run.ts (with `pg`, not measured):
 * seeds the source table with deterministic short ticket-like sentences, creates each side's target table fresh, and
 * checks a target holds every source id exactly once with a vector of the right dimension — and, for a sample of rows,
 * the very vector the emulator's engine computes for that row's text (so an answer joined to the wrong row fails).
 */
import { Engine } from "@offpeak/providers/local"
import pg from "pg"
import { prng, text } from "../test/support/files.ts"
import { MODEL, SCHEMA, SOURCE_TABLE } from "./pg-embeddings.ts"

/** how the target tables store vectors: pgvector's `vector(n)` when the server has the extension, else `real[]` */
export type VectorType = "vector" | "real[]"

const withClient = async <A>(url: string, f: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** the text of source row `id`: a ticket-like sentence of 4 to ~34 words, numbered (so no two rows share a request) */
export const sentence = (id: number, rand: () => number): string => {
  const words = 4 + Math.floor(rand() * rand() * 30)
  const body = text(rand, words)
  return `${id}: ${body.charAt(0).toUpperCase()}${body.slice(1)}.`
}

/**
 * Drops and recreates {@link SCHEMA} with `documents (id integer primary key, text text not null)` holding ids
 * 1…rows (deterministic text, seed 42). Tells whether pgvector is available (`CREATE EXTENSION IF NOT EXISTS vector`).
 */
export const seed = (url: string, rows: number): Promise<{ readonly vectorType: VectorType; readonly bytes: number }> =>
  withClient(url, async (client) => {
    let vectorType: VectorType = "vector"
    try {
      await client.query("CREATE EXTENSION IF NOT EXISTS vector")
    } catch {
      vectorType = "real[]"
    }
    await client.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`)
    await client.query(`CREATE SCHEMA ${SCHEMA}`)
    await client.query(`CREATE TABLE ${SCHEMA}.${SOURCE_TABLE} (id integer PRIMARY KEY, text text NOT NULL)`)
    const rand = prng(42)
    let bytes = 0
    const CHUNK = 10_000
    for (let first = 1; first <= rows; first += CHUNK) {
      const ids: Array<number> = []
      const texts: Array<string> = []
      for (let id = first; id < Math.min(first + CHUNK, rows + 1); id++) {
        const t = sentence(id, rand)
        ids.push(id)
        texts.push(t)
        bytes += Buffer.byteLength(t)
      }
      await client.query(
        `INSERT INTO ${SCHEMA}.${SOURCE_TABLE} (id, text) SELECT * FROM unnest($1::integer[], $2::text[])`,
        [ids, texts]
      )
    }
    await client.query(`ANALYZE ${SCHEMA}.${SOURCE_TABLE}`)
    return { vectorType, bytes }
  })

/** drops and creates `table` in {@link SCHEMA}: `(id integer primary key, embedding vector(dims) | real[])` */
export const resetTarget = (url: string, table: string, vectorType: VectorType, dimensions: number): Promise<void> =>
  withClient(url, async (client) => {
    await client.query(`DROP TABLE IF EXISTS ${SCHEMA}.${table}`)
    const type = vectorType === "vector" ? `vector(${dimensions})` : "real[]"
    await client.query(`CREATE TABLE ${SCHEMA}.${table} (id integer PRIMARY KEY, embedding ${type})`)
  })

/**
 * Checks `table` holds every source id exactly once (and no other), each with a vector of `dimensions` numbers, and
 * that `sample` rows spread over the ids hold the engine's vector of their text; throws naming what is wrong.
 */
export const verifyTarget = (
  url: string,
  table: string,
  vectorType: VectorType,
  rows: number,
  dimensions: number,
  what: string
): Promise<void> =>
  withClient(url, async (client) => {
    const target = `${SCHEMA}.${table}`
    const source = `${SCHEMA}.${SOURCE_TABLE}`
    const dims = vectorType === "vector" ? "vector_dims(t.embedding)" : "cardinality(t.embedding)"
    const { rows: [c] } = await client.query<{ total: number; distinct: number; bad: number; missing: number; extra: number }>(
      `SELECT
         (SELECT count(*)::int FROM ${target}) AS total,
         (SELECT count(DISTINCT id)::int FROM ${target}) AS distinct,
         (SELECT count(*)::int FROM ${target} t WHERE t.embedding IS NULL OR ${dims} IS DISTINCT FROM ${dimensions}) AS bad,
         (SELECT count(*)::int FROM ${source} s WHERE NOT EXISTS (SELECT 1 FROM ${target} t WHERE t.id = s.id)) AS missing,
         (SELECT count(*)::int FROM ${target} t WHERE NOT EXISTS (SELECT 1 FROM ${source} s WHERE s.id = t.id)) AS extra`
    )
    if (c!.total !== rows || c!.distinct !== rows || c!.missing !== 0 || c!.extra !== 0 || c!.bad !== 0) {
      const example = c!.missing === 0
        ? ""
        : `, e.g. id ${(await client.query(`SELECT s.id FROM ${source} s WHERE NOT EXISTS (SELECT 1 FROM ${target} t WHERE t.id = s.id) LIMIT 1`)).rows[0]!.id} is missing`
      throw new Error(
        `${what}: ${target} holds ${c!.total} rows (${c!.distinct} distinct ids) for ${rows} source rows: ${c!.missing} missing, ` +
          `${c!.extra} not in the source, ${c!.bad} without a vector of ${dimensions} dimensions${example}`
      )
    }
    // a sample of rows: the stored vector is the engine's for that row's text (float4 both ways)
    const ids = Array.from({ length: 25 }, (_, i) => 1 + Math.floor((i * (rows - 1)) / 24))
    const cast = vectorType === "vector" ? "t.embedding::real[]" : "t.embedding"
    const sample = await client.query<{ id: number; text: string; embedding: Array<number> }>(
      `SELECT s.id, s.text, ${cast} AS embedding FROM ${source} s JOIN ${target} t USING (id) WHERE s.id = ANY($1::integer[])`,
      [ids]
    )
    if (sample.rows.length !== new Set(ids).size) throw new Error(`${what}: sample of ${new Set(ids).size} ids found ${sample.rows.length}`)
    for (const row of sample.rows) {
      const expected = Engine.embed({ model: MODEL, input: row.text, dimensions }).vector
      const stored = row.embedding.map(Number)
      const at = expected.findIndex((x, i) => Math.fround(x) !== Math.fround(stored[i]!))
      if (stored.length !== expected.length || at !== -1) {
        throw new Error(`${what}: id ${row.id}: stored vector differs from its text's embedding at index ${at} (${stored[at]} vs ${expected[at]})`)
      }
    }
  })

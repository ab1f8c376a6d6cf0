/**
 * Embedding backfill: the documents of a Postgres table → embeddings (OpenAI
 * Batch, `/v1/embeddings`) → the same table's `embedding` column.
 *
 *   npm run offpeak -- run examples/embedding-backfill/pipeline.ts
 *
 * On the embedded default (no `DATABASE_URL`) the table lives in an embedded
 * Postgres with pgvector (PGlite, in `.offpeak/examples/embedding-backfill/`),
 * created and filled with sample documents on first use, and the embeddings
 * come from the local OpenAI emulator. With `DATABASE_URL` it backfills your
 * `documents (id, title, body, embedding vector(256) | real[])` table; with
 * `OPENAI_API_KEY` it calls the real Batch API.
 *
 * Run it again: nothing is sent (every answer is in the result cache). Change
 * some documents and run again: only those are sent.
 */
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import { Jsonl } from "@offpeak/io/jsonl"
import { Postgres } from "@offpeak/io/postgres"
import { Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

/** one document */
export const Document = Schema.Struct({ id: Schema.Number, title: Schema.String, body: Schema.String })

/** dimensions of the embeddings (text-embedding-3-small takes any up to 1536) */
export const DIMENSIONS = 256

const TOPICS = ["billing", "shipping", "login", "refunds", "exports", "search", "mobile app", "invoices", "api", "privacy"]
const VERBS = ["explains", "covers", "describes", "walks through", "answers questions about"]

/** an embedded Postgres with pgvector and a seeded documents table; the URL of its socket server */
const embedded = async (): Promise<string> => {
  const { PGlite } = await import("@electric-sql/pglite")
  const { vector } = await import("@electric-sql/pglite-pgvector")
  const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket")
  const dataDir = path.resolve(".offpeak/examples/embedding-backfill/pgdata")
  fs.mkdirSync(path.dirname(dataDir), { recursive: true })
  const db = await PGlite.create({ dataDir, extensions: { vector } })
  await db.exec(`CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE IF NOT EXISTS documents (
      id integer PRIMARY KEY, title text NOT NULL, body text NOT NULL, embedding vector(${DIMENSIONS}))`)
  const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM documents")
  if (rows[0]!.n === 0) {
    const values: Array<string> = []
    for (let id = 1; id <= 500; id++) {
      const topic = TOPICS[id % TOPICS.length]!
      const title = `Help article ${id}: ${topic}`
      const body = `This article ${VERBS[id % VERBS.length]} ${topic} for customers of plan ${id % 7}.`
      values.push(`(${id}, '${title}', '${body}')`)
    }
    await db.exec(`INSERT INTO documents (id, title, body) VALUES ${values.join(", ")}`)
  }
  const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 8 })
  await server.start()
  process.stderr.write(`no DATABASE_URL: backfilling the embedded database in ${dataDir}\n`)
  return `postgres://postgres@${server.getServerConn()}/postgres`
}

const url = process.env.DATABASE_URL ?? await embedded()

export default Pipeline.make({
  name: "embedding-backfill",
  // keyset pages in id order: a resumed run continues after the last document it admitted
  source: Postgres.source({
    url,
    query: "SELECT id, title, body FROM documents",
    schema: Document,
    key: "id",
    checkpoint: { column: "id" },
    name: "documents"
  }),
  key: (doc) => String(doc.id),
  request: (doc) =>
    Request.embedding({ model: "text-embedding-3-small", input: `${doc.title}\n\n${doc.body}`, dimensions: DIMENSIONS }),
  row: (result) => ({ id: result.record.id, embedding: result.output }),
  // writes the embedding column of rows that are there (their other columns are NOT NULL and stay as they are)
  sink: Postgres.sink({
    url,
    table: "documents",
    key: "id",
    columns: ["id", "embedding"],
    vectorColumns: ["embedding"],
    mode: "update"
  }),
  deadLetter: Jsonl.sink({ dir: "out/embedding-backfill/dead-letter" }),
  batch: { maxRequests: 5_000, maxInFlight: 3 }
})

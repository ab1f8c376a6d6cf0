/**
 * Warehouse embeddings: the documents of a BigQuery table → embeddings
 * (OpenAI Batch, `/v1/embeddings`, 256 dimensions) → a BigQuery table of
 * `(id, embedding, model, source_updated_at)`, MERGEd on `id`, incremental on
 * `updated_at`.
 *
 *   npm run offpeak -- run examples/warehouse-embeddings/pipeline.ts
 *
 * On the embedded default (no `BIGQUERY_EMULATOR_HOST`, no Google
 * credentials) the BigQuery emulator starts in this process with its state in
 * `.offpeak/examples/warehouse-embeddings/bigquery/` and `warehouse.documents`
 * is seeded once with 2,000 help-center articles; without `OPENAI_API_KEY`
 * the CLI runs the local OpenAI emulator (see `warehouse.ts` for the other
 * places the tables can be).
 *
 * Run it again: nothing is read or sent — the run starts after the
 * checkpoint (`updated_at`, then `id`) where the last completed run stopped.
 * Edit some documents (`node examples/warehouse-embeddings/edit.ts 25` bumps
 * their `updated_at`) and run again: exactly those are read, sent and MERGEd.
 */
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import { BigQuery } from "@offpeak/io/bigquery"
import { Schema } from "effect"
import * as Warehouse from "./warehouse.ts"

/** one document, as the source query gives it (`updated_at`: ISO 8601 with microseconds) */
export const Document = Schema.Struct({
  id: Schema.Number,
  title: Schema.String,
  body: Schema.String,
  updated_at: Schema.String
})

/** the embedding model, and the dimensions asked of it (text-embedding-3-small takes any up to 1536) */
export const MODEL = "text-embedding-3-small"
export const DIMENSIONS = 256

/** the text embedded for a document */
export const input = (doc: { readonly title: string; readonly body: string }): string => `${doc.title}\n\n${doc.body}`

/** one row of the target table */
export interface Embedding {
  readonly id: number
  readonly embedding: ReadonlyArray<number>
  readonly model: string
  /** the `updated_at` of the document version that was embedded */
  readonly source_updated_at: string
}

const warehouse = await Warehouse.open()
process.stderr.write(`${warehouse.where}\n`)

export default Pipeline.make<typeof Document.Type, unknown, Embedding>({
  name: "warehouse-embeddings",
  // read in (updated_at, id) order from one snapshot; a new run reads only what changed since the last completed one
  source: BigQuery.source({
    query: `SELECT id, title, body, updated_at FROM ${Warehouse.DOCUMENTS}`,
    schema: Document,
    key: "id",
    checkpoint: { column: "updated_at" },
    pageSize: 1_000,
    connection: warehouse.connection,
    name: Warehouse.DOCUMENTS
  }),
  incremental: true,
  key: (doc) => String(doc.id),
  request: (doc) => Request.embedding({ model: MODEL, input: input(doc), dimensions: DIMENSIONS }),
  row: (result) => ({
    id: result.record.id,
    embedding: result.output as ReadonlyArray<number>,
    model: MODEL,
    source_updated_at: result.record.updated_at
  }),
  // each part: a load job into a staging table, then MERGE on id (job ids derived from the run and part: idempotent)
  sink: BigQuery.sink<Embedding>({
    table: Warehouse.EMBEDDINGS,
    key: "id",
    schema: [
      { name: "id", type: "INT64", mode: "REQUIRED" },
      { name: "embedding", type: "FLOAT64", mode: "REPEATED" },
      { name: "model", type: "STRING", mode: "REQUIRED" },
      { name: "source_updated_at", type: "TIMESTAMP", mode: "REQUIRED" }
    ],
    connection: warehouse.connection
  }),
  batch: { maxRequests: 500, maxInFlight: 4 }
})

/**
 * The Postgres → embeddings → Postgres scenario's pipeline, as a user would write it with offpeak's public API: the
 * Postgres source reading `offpeak_bench_pg.documents (id, text)` in keyset pages on `id`, an OpenAI embedding request
 * per row (`text-embedding-3-small`, {@link DIMENSIONS} dimensions), and the Postgres sink upserting `(id, embedding)`
 * into a target table of that schema (merge on `id`; `vector(n)` with pgvector, `real[]` without).
 *
 * bench/offpeak.ts runs it with `--pg-embeddings`; bench/run.ts seeds the source and creates the target
 * (bench/pg-embeddings-db.ts). Only offpeak's packages are imported here: this module is what offpeak's side loads.
 */
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import { Jsonl } from "@offpeak/io/jsonl"
import { Postgres } from "@offpeak/io/postgres"
import { Schema } from "effect"

/** the schema holding the source table and the targets; bench/run.ts drops and recreates it for every size */
export const SCHEMA = "offpeak_bench_pg"

/** the source table: `id integer primary key, text text not null` */
export const SOURCE_TABLE = "documents"

/** the embedding model both sides request */
export const MODEL = "text-embedding-3-small"

/** dimensions of the embeddings both sides request (text-embedding-3-small takes any up to 1536) */
export const DIMENSIONS = 256

/** one source row */
export const Document = Schema.Struct({ id: Schema.Number, text: Schema.String })

/** the pipeline: `table` is the target in {@link SCHEMA}, created beforehand with `(id integer primary key, embedding …)` */
export const make = (options: {
  readonly url: string
  readonly table: string
  readonly deadLetter: string
  readonly dimensions?: number | undefined
  readonly maxRequests?: number | undefined
  readonly maxInFlight?: number | undefined
}) => {
  const dimensions = options.dimensions ?? DIMENSIONS
  return Pipeline.make({
    name: "pg-embeddings",
    // keyset pages in id order (1,000 rows each): no transaction held open while the pipeline works
    source: Postgres.source({
      url: options.url,
      query: `SELECT id, text FROM ${SCHEMA}.${SOURCE_TABLE}`,
      schema: Document,
      key: "id",
      checkpoint: { column: "id" },
      name: SOURCE_TABLE
    }),
    key: (doc) => String(doc.id),
    request: (doc) => Request.embedding({ model: MODEL, input: doc.text, dimensions }),
    row: (result) => ({ id: result.record.id, embedding: result.output }),
    sink: Postgres.sink({
      url: options.url,
      schema: SCHEMA,
      table: options.table,
      key: "id",
      columns: ["id", "embedding"],
      vectorColumns: ["embedding"]
    }),
    deadLetter: Jsonl.sink({ dir: options.deadLetter }),
    // batches close on size only, as the baseline's (no time-based flush)
    batch: { maxRequests: options.maxRequests, maxInFlight: options.maxInFlight, flushAfter: "1 hour" }
  })
}

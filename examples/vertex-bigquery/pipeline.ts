/**
 * Vertex AI batch prediction from BigQuery, pushed down: 10,000 product
 * descriptions in `shop.products` → Gemini classification with a typed output
 * schema → `shop.product_categories`. No row passes through offpeak: BigQuery
 * builds each row's request, Vertex reads and writes tables, BigQuery decodes
 * the answers and MERGEs them on the key.
 *
 *   npm run offpeak -- run examples/vertex-bigquery/pipeline.ts
 *   node examples/vertex-bigquery/show.ts          (what landed; in this repository: scripts/with-node.sh node …)
 *
 * The core's pushdown runner drives it (the source has `pushdown` and the
 * `vertex` provider takes BigQuery tables): each job is a ledger batch, created
 * once (its batch id in the job's display name and labels, so a crash before
 * the id is recorded finds the job), polled, tallied and landed; the keys that
 * failed go again as a smaller job, at most 3 jobs, then to the run's dead
 * letter (`.offpeak/runs/<run>/dead-letter/`) with the reason. `offpeak resume
 * <run>` goes on with a run killed anywhere.
 *
 * Offline by default: with no `GOOGLE_CLOUD_PROJECT` the `vertex` plugin starts
 * the local Cloud Storage, BigQuery and Vertex emulators in-process (state in
 * `.offpeak/emulator/vertex/`). On them, unless `OFFPEAK_EMULATOR_KNOBS` says
 * otherwise, 5 % of rows fail with `RESOURCE_EXHAUSTED` and 3 % of answers do
 * not decode, so the retries and the dead letter show (`OFFPEAK_EMULATOR_KNOBS='{}'`
 * runs clean). With `GOOGLE_CLOUD_PROJECT` set (Google's application default
 * credentials, `GOOGLE_CLOUD_LOCATION`, default `us-central1`; a `shop` dataset
 * in that region) the same command runs on BigQuery and Vertex AI.
 */
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import { SinkError } from "@offpeak/core/Sink"
import type * as Sink from "@offpeak/core/Sink"
import { BigQuery } from "@offpeak/io/bigquery"
import { Effect } from "effect"
import * as Example from "./pushdown.ts"

/** the emulator's faults when nothing else is asked: enough failed rows that retries and the dead letter show */
export const DEMO_FAULTS = { rowFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.05 }], malformedAnswers: 0.03, chunkRows: 2_000 }

if ((process.env.GOOGLE_CLOUD_PROJECT ?? "") === "" && process.env.OFFPEAK_EMULATOR_KNOBS === undefined) {
  // read by the vertex plugin when it starts the local emulators, after this module is loaded
  process.env.OFFPEAK_EMULATOR_KNOBS = JSON.stringify(DEMO_FAULTS)
}

/**
 * The source: `shop.products` as a BigQuery source (its schema types the records and the request below), with the
 * pushdown that runs instead of reading it. Its row count is left out: counting would reach for BigQuery before the
 * plugin has said where it is, and no row is read anyway.
 */
const { count: _count, ...products } = BigQuery.source({ table: Example.TABLES.source, schema: Example.Product, key: "sku" })

/**
 * Where the rows land. The pushdown lands them itself (a MERGE of the decoded answers into the target, in
 * BigQuery); the runner never hands this sink a row, and it refuses any it would be given.
 */
const landed: Sink.Sink<unknown> = {
  name: `BigQuery ${Example.TABLES.target} (MERGEd by the pushdown, no row through offpeak)`,
  write: () =>
    Effect.fail(
      new SinkError({ sink: Example.TABLES.target, message: "the pushdown lands its rows in BigQuery itself: this sink takes none" })
    )
}

export default Pipeline.make({
  name: "vertex-bigquery",
  provider: "vertex",
  source: { ...products, pushdown: Example.classify() },
  key: (product) => String(product.sku),
  // the typed form of the request the pushdown renders in SQL; the runner sends none of these: the vertex provider
  // takes BigQuery tables, so the run is pushed down
  request: (product) =>
    Request.chat({
      model: Example.MODEL,
      system: Example.SYSTEM,
      prompt: `Title: ${product.title}\nDescription: ${product.description}`,
      maxTokens: Example.MAX_TOKENS,
      temperature: 0
    }),
  output: Example.Classification,
  outputName: "Classification",
  sink: landed,
  retry: { maxAttempts: 3 }
})
